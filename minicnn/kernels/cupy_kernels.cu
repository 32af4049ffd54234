// CUDA kernels of minicnn's cupy backend: one thread per OUTPUT element, so every element
// is written by exactly one thread. The adjoints (col2im, pooling backward) are gathers:
// each input pixel sums the window entries that came from it, so no atomics are needed
// and the sums are deterministic.
//
// T is float or double (cupy instantiates both through name expressions, e.g. im2col<float>).
// Sizes are int; flat indices are long long so batches with more than 2^31 elements work.
//
// This file is also compiled on the CPU by the tests (g++ with a tiny harness that emulates
// blockIdx/threadIdx), so the index logic below is exercised in CI without a GPU.

template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, long long total,
                       int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // cols is (C*KH*KW, N*OH*OW): row = (c, i, j) in the window, column = one output pixel
    const long long P = (long long)N * OH * OW;
    int row = (int)(idx / P);
    long long col = idx % P;
    int ow = (int)(col % OW);
    int oh = (int)((col / OW) % OH);
    long long n = col / ((long long)OW * OH);
    int j = row % KW;
    int i = (row / KW) % KH;
    int c = row / (KW * KH);
    int h = oh * SH - PH + i;
    int w = ow * SW - PW + j;
    cols[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
}

template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ dx, long long total,
                       int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // one thread per input pixel (n, c, h, w): gather every column entry copied from it
    int w = (int)(idx % W);
    int h = (int)((idx / W) % H);
    int c = (int)((idx / ((long long)W * H)) % C);
    long long n = idx / ((long long)W * H * C);
    const long long P = (long long)N * OH * OW;  // the length of a row of cols
    T sum = T(0);
    for (int i = 0; i < KH; ++i) {
        int hp = h + PH - i;  // = oh * SH for the window that puts this pixel at row i
        if (hp < 0 || hp % SH != 0) continue;
        int oh = hp / SH;
        if (oh >= OH) continue;
        for (int j = 0; j < KW; ++j) {
            int wp = w + PW - j;
            if (wp < 0 || wp % SW != 0) continue;
            int ow = wp / SW;
            if (ow >= OW) continue;
            sum += cols[((long long)(c * KH + i) * KW + j) * P + (n * OH + oh) * OW + ow];
        }
    }
    dx[idx] = sum;
}

template <typename T>
__global__ void maxpool_forward(const T* __restrict__ x, T* __restrict__ y,
                                int* __restrict__ argmax, long long total, int H, int W,
                                int KH, int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // one thread per output (plane, oh, ow); plane = n * C + c
    int ow = (int)(idx % OW);
    int oh = (int)((idx / OW) % OH);
    long long plane = idx / ((long long)OW * OH);
    const T* window = x + (plane * H + (long long)oh * SH) * W + (long long)ow * SW;
    T best = window[0];
    int best_index = 0;
    for (int i = 0; i < KH; ++i) {
        for (int j = 0; j < KW; ++j) {
            T value = window[i * W + j];
            if (value > best) {  // strict: the first maximum wins ties, as in PyTorch
                best = value;
                best_index = i * KW + j;
            }
        }
    }
    y[idx] = best;
    argmax[idx] = best_index;
}

template <typename T>
__global__ void maxpool_backward(const T* __restrict__ dy, const int* __restrict__ argmax,
                                 T* __restrict__ dx, long long total, int H, int W, int KH,
                                 int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // one thread per input pixel: sum dy over the windows this pixel won
    int w = (int)(idx % W);
    int h = (int)((idx / W) % H);
    long long plane = idx / ((long long)W * H);
    T sum = T(0);
    for (int i = 0; i < KH; ++i) {
        int hp = h - i;
        if (hp < 0 || hp % SH != 0) continue;
        int oh = hp / SH;
        if (oh >= OH) continue;
        for (int j = 0; j < KW; ++j) {
            int wp = w - j;
            if (wp < 0 || wp % SW != 0) continue;
            int ow = wp / SW;
            if (ow >= OW) continue;
            long long out = (plane * OH + oh) * OW + ow;
            if (argmax[out] == i * KW + j) sum += dy[out];
        }
    }
    dx[idx] = sum;
}

template <typename T>
__global__ void avgpool_forward(const T* __restrict__ x, T* __restrict__ y, long long total,
                                int H, int W, int KH, int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int ow = (int)(idx % OW);
    int oh = (int)((idx / OW) % OH);
    long long plane = idx / ((long long)OW * OH);
    const T* window = x + (plane * H + (long long)oh * SH) * W + (long long)ow * SW;
    T sum = T(0);
    for (int i = 0; i < KH; ++i)
        for (int j = 0; j < KW; ++j) sum += window[i * W + j];
    y[idx] = sum / T(KH * KW);
}

template <typename T>
__global__ void avgpool_backward(const T* __restrict__ dy, T* __restrict__ dx, long long total,
                                 int H, int W, int KH, int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int w = (int)(idx % W);
    int h = (int)((idx / W) % H);
    long long plane = idx / ((long long)W * H);
    T sum = T(0);
    for (int i = 0; i < KH; ++i) {
        int hp = h - i;
        if (hp < 0 || hp % SH != 0) continue;
        int oh = hp / SH;
        if (oh >= OH) continue;
        for (int j = 0; j < KW; ++j) {
            int wp = w - j;
            if (wp < 0 || wp % SW != 0) continue;
            int ow = wp / SW;
            if (ow >= OW) continue;
            sum += dy[(plane * OH + oh) * OW + ow];
        }
    }
    dx[idx] = sum / T(KH * KW);
}
