// CUDA kernels of minicnn's cupy backend. Every output element is written by exactly one
// thread: one thread per output element, except im2col, where a thread copies one channel of
// one window (KH*KW entries), so that the index arithmetic (integer divisions, slow on a GPU)
// is done once per window instead of once per entry. The adjoints (col2im, pooling
// backward) are gathers: each input pixel sums the window entries that came from it, so no
// atomics are needed and the sums are deterministic.
//
// T is float or double (cupy instantiates both through name expressions, e.g. im2col<float>).
// Sizes are int; flat indices are long long so batches with more than 2^31 elements work.
//
// This file is also compiled on the CPU by the tests (g++ with a tiny harness that emulates
// blockIdx/threadIdx), so the index logic below is exercised in CI without a GPU.

// The gathers (col2im, pooling backward) run the windows backwards, one thread per input pixel.
// window_at: which output position o has input coordinate x at window position k, i.e.
// o * stride - pad + k == x? True, with *o, when it exists in [0, count).
__device__ __forceinline__ bool window_at(int x, int k, int pad, int stride, int count, int* o) {
    int shifted = x + pad - k;
    if (shifted < 0) return false;
    if (stride == 1) {  // most convolutions: no division (and the same branch for every thread)
        *o = shifted;
    } else {
        if (shifted % stride != 0) return false;
        *o = shifted / stride;
    }
    return *o < count;
}

// for_each_window: visit(oh, ow, i, j) for every window (oh, ow) that holds pixel (h, w) at its
// position (i, j), in row-major (i, j) order (the order the numpy reference adds in)
template <typename Visit>
__device__ __forceinline__ void for_each_window(int h, int w, int KH, int KW, int SH, int SW,
                                                int PH, int PW, int OH, int OW, Visit visit) {
    int oh, ow;
    for (int i = 0; i < KH; ++i) {
        if (!window_at(h, i, PH, SH, OH, &oh)) continue;
        for (int j = 0; j < KW; ++j)
            if (window_at(w, j, PW, SW, OW, &ow)) visit(oh, ow, i, j);
    }
}

// pixel_of: the (plane, h, w) of flat index idx into planes of H x W pixels
__device__ __forceinline__ long long pixel_of(long long idx, int H, int W, int* h, int* w) {
    *w = (int)(idx % W);
    *h = (int)((idx / W) % H);
    return idx / ((long long)W * H);
}

// window_of: the top-left input pixel of pooling window number idx (plane, oh, ow)
template <typename T>
__device__ __forceinline__ const T* window_of(const T* x, long long idx, int H, int W, int SH,
                                              int SW, int OH, int OW) {
    int oh, ow;
    long long plane = pixel_of(idx, OH, OW, &oh, &ow);
    return x + (plane * H + (long long)oh * SH) * W + (long long)ow * SW;
}

template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, long long total,
                       int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW) {
    // cols is (C*KH*KW, N*OH*OW): row = (c, i, j) in the window, column = one output pixel.
    // One thread per (c, column): total = C * N*OH*OW. Neighbouring threads take neighbouring
    // columns, so for every (i, j) they read neighbouring pixels and write neighbouring entries.
    const long long P = (long long)N * OH * OW;  // the length of a row of cols
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int c = (int)(idx / P);
    long long col = idx % P;
    int oh, ow;
    long long n = pixel_of(col, OH, OW, &oh, &ow);
    const T* plane = x + (n * C + c) * H * W;
    T* column = cols + (long long)c * KH * KW * P + col;  // row (c, 0, 0) of this column
    for (int i = 0; i < KH; ++i) {
        int h = oh * SH - PH + i;
        for (int j = 0; j < KW; ++j) {
            int w = ow * SW - PW + j;
            column[(long long)(i * KW + j) * P] =
                (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : T(0);
        }
    }
}

template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ dx, long long total,
                       int N, int C, int H, int W, int KH, int KW, int SH, int SW, int PH, int PW,
                       int OH, int OW) {
    // one thread per input pixel (n, c, h, w): gather every column entry copied from it
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int h, w;
    long long plane = pixel_of(idx, H, W, &h, &w);  // n * C + c
    int c = (int)(plane % C);
    long long n = plane / C;
    const long long P = (long long)N * OH * OW;  // the length of a row of cols
    T sum = T(0);
    for_each_window(h, w, KH, KW, SH, SW, PH, PW, OH, OW, [&](int oh, int ow, int i, int j) {
        sum += cols[((long long)(c * KH + i) * KW + j) * P + (n * OH + oh) * OW + ow];
    });
    dx[idx] = sum;
}

template <typename T>
__global__ void maxpool_forward(const T* __restrict__ x, T* __restrict__ y,
                                int* __restrict__ argmax, long long total, int H, int W,
                                int KH, int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    // one thread per output (plane, oh, ow); plane = n * C + c
    const T* window = window_of(x, idx, H, W, SH, SW, OH, OW);
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

// one thread per input pixel: the sum of dy over the windows this pixel won
template <typename T>
__device__ __forceinline__ T maxpool_gradient(const T* dy, const int* argmax, long long idx,
                                              int H, int W, int KH, int KW, int SH, int SW,
                                              int OH, int OW) {
    int h, w;
    long long plane = pixel_of(idx, H, W, &h, &w);
    T sum = T(0);
    for_each_window(h, w, KH, KW, SH, SW, 0, 0, OH, OW, [&](int oh, int ow, int i, int j) {
        long long out = (plane * OH + oh) * OW + ow;
        if (argmax[out] == i * KW + j) sum += dy[out];
    });
    return sum;
}

template <typename T>
__global__ void maxpool_backward(const T* __restrict__ dy, const int* __restrict__ argmax,
                                 T* __restrict__ dx, long long total, int H, int W, int KH,
                                 int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    dx[idx] = maxpool_gradient(dy, argmax, idx, H, W, KH, KW, SH, SW, OH, OW);
}

// the same, then ReLU's backward (a ReLU before the pool, layers/fused.py): relu_x is the ReLU's
// input or output, positive at the same places
template <typename T>
__global__ void maxpool_relu_backward(const T* __restrict__ dy, const int* __restrict__ argmax,
                                      const T* __restrict__ relu_x, T* __restrict__ dx,
                                      long long total, int H, int W, int KH, int KW, int SH,
                                      int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    T sum = maxpool_gradient(dy, argmax, idx, H, W, KH, KW, SH, SW, OH, OW);
    dx[idx] = sum * T(relu_x[idx] > T(0));
}

template <typename T>
__global__ void avgpool_forward(const T* __restrict__ x, T* __restrict__ y, long long total,
                                int H, int W, int KH, int KW, int SH, int SW, int OH, int OW) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    const T* window = window_of(x, idx, H, W, SH, SW, OH, OW);
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
    int h, w;
    long long plane = pixel_of(idx, H, W, &h, &w);
    T sum = T(0);
    for_each_window(h, w, KH, KW, SH, SW, 0, 0, OH, OW, [&](int oh, int ow, int, int) {
        sum += dy[(plane * OH + oh) * OW + ow];
    });
    dx[idx] = sum / T(KH * KW);
}

// --- BatchNorm's per-channel sums, one pass over the batch -------------------------------
// A channel's N*H*W values are summed by S threads (S <= H*W): thread (c, s) takes pixels
// s, s + S, s + 2S, ... of every plane of channel c, so the S threads of a channel read
// neighbouring addresses. Each thread adds in double (a float batch loses nothing to the
// order) and writes its partial sums, two per thread, into sums (2, C, S): no atomics, no
// shared memory, the same sums every run; the caller adds the S partials of a channel.

// batchnorm_stats: sums[0] = sum x, sums[1] = sum x*x per channel
template <typename T>
__global__ void batchnorm_stats(const T* __restrict__ x, double* __restrict__ sums,
                                long long total, int N, int C, int HW, int S) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int c = (int)(idx / S), s = (int)(idx % S);
    double sum = 0, squares = 0;
    for (int n = 0; n < N; ++n) {
        const T* plane = x + ((long long)n * C + c) * HW;
        for (int j = s; j < HW; j += S) {
            double v = (double)plane[j];
            sum += v;
            squares += v * v;
        }
    }
    sums[idx] = sum;
    sums[total + idx] = squares;
}

// batchnorm_grad_sums: with g = dy (relu = 0), or g = dy where BatchNorm's output was positive
// (relu = 1: the ReLU after it, its output computed again from x with the forward's formula),
// sums[0] = sum g (dbeta) and sums[1] = sum g * xhat (dgamma) per channel
template <typename T>
__global__ void batchnorm_grad_sums(const T* __restrict__ dy, const T* __restrict__ x,
                                    const T* __restrict__ mean, const T* __restrict__ inv_std,
                                    const T* __restrict__ gamma, const T* __restrict__ beta,
                                    double* __restrict__ sums, long long total, int N, int C,
                                    int HW, int S, int relu) {
    long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= total) return;
    int c = (int)(idx / S), s = (int)(idx % S);
    double dbeta = 0, dgamma = 0;
    for (int n = 0; n < N; ++n) {
        long long plane = ((long long)n * C + c) * HW;
        for (int j = s; j < HW; j += S) {
            T xhat = (x[plane + j] - mean[c]) * inv_std[c];
            T g = dy[plane + j];
            if (relu && !(xhat * gamma[c] + beta[c] > T(0))) g = T(0);
            dbeta += (double)g;
            dgamma += (double)g * (double)xhat;
        }
    }
    sums[idx] = dbeta;
    sums[total + idx] = dgamma;
}
