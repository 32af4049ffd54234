// Typesets the math of every page with KaTeX, as Material for MkDocs documents it: the \( \)
// and \[ \] that pymdownx.arithmatex leaves in the Markdown pages, and the $ $ and $$ $$ of the
// notebooks' Markdown cells. Code (pre, code) is left alone. A page reached by the instant
// navigation is typeset too (document$ emits for every page).
document$.subscribe(({ body }) => {
  renderMathInElement(body, {
    delimiters: [
      { left: "$$", right: "$$", display: true },
      { left: "$", right: "$", display: false },
      { left: "\\(", right: "\\)", display: false },
      { left: "\\[", right: "\\]", display: true },
    ],
    throwOnError: false,  // a formula KaTeX cannot read is shown in red, with the page around it
  })
})
