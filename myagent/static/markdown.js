// myagent-ws: answers as Markdown, rendered inert.
//
// markdown-it (vendor/markdown-it.min.js, see vendor/README.md) with raw HTML off: any tag in
// the text comes out escaped, as text. Links may only go to http:, https: or mailto: (anything
// else, javascript: included, stays plain text), open in a new tab with rel="noopener
// noreferrer"; images are not loaded (they show as links). As a tripwire against a parser bug,
// output with an element or attribute markdown-it never makes for these rules is shown as
// plain text instead.

(() => {
  "use strict";

  const LINK_OK = /^(https?:|mailto:)/i;
  const TAGS = new Set(["P", "BR", "EM", "STRONG", "S", "CODE", "PRE", "BLOCKQUOTE", "UL", "OL", "LI", "A", "HR",
                        "H1", "H2", "H3", "H4", "H5", "H6", "TABLE", "THEAD", "TBODY", "TR", "TH", "TD"]);
  const ATTRS = new Set(["href", "title", "rel", "target", "class", "start"]);

  const md = window.markdownit({ html: false, linkify: true, breaks: true, typographer: false });
  md.validateLink = (url) => LINK_OK.test(url.trim());
  md.disable("image");  // "![alt](url)" becomes "!" and a link: nothing is fetched from elsewhere

  md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
    tokens[idx].attrSet("target", "_blank");
    tokens[idx].attrSet("rel", "noopener noreferrer");
    return self.renderToken(tokens, idx, options);
  };
  // Table alignment as a class: the pages' CSP refuses inline style attributes.
  for (const rule of ["th_open", "td_open"]) {
    md.renderer.rules[rule] = (tokens, idx, options, env, self) => {
      const token = tokens[idx];
      const style = token.attrGet("style");
      if (style) {
        token.attrs = token.attrs.filter(([name]) => name !== "style");
        token.attrJoin("class", "align-" + style.replace("text-align:", ""));
      }
      return self.renderToken(tokens, idx, options);
    };
  }

  function expected(node) {
    for (const element of node.querySelectorAll("*")) {
      if (!TAGS.has(element.tagName)) return false;
      for (const attr of element.attributes) if (!ATTRS.has(attr.name)) return false;
      if (element.tagName === "A" && !LINK_OK.test(element.getAttribute("href") || "")) return false;
    }
    return true;
  }

  // A fragment to append: parsed in an inert <template> (nothing runs or loads) and checked first.
  function render(text) {
    const template = document.createElement("template");
    template.innerHTML = md.render(text);
    if (expected(template.content)) return template.content;
    console.warn("myagent-ws: unexpected Markdown output, shown as text");
    const p = document.createElement("p");
    p.className = "plain";
    p.textContent = text;
    return p;
  }

  window.myagentMarkdown = { render };
})();
