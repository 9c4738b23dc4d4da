// myagent-ws: the access token of the console and the dashboard (servers run with auth on).
//
// Given as #token=TOKEN (a fragment is never sent to the server, so it lands in no access log)
// or as ?token=TOKEN (older links), kept in this tab's sessionStorage and removed from the
// address bar, so it is not bookmarked, shared with the URL, or sent again on a reload.

(() => {
  "use strict";

  const KEY = "myagent-ws.token";

  function take() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const query = new URLSearchParams(location.search);
    const given = hash.get("token") || query.get("token");
    if (!given) {
      try { return sessionStorage.getItem(KEY); } catch (err) { return null; }
    }
    try { sessionStorage.setItem(KEY, given); } catch (err) { /* storage disabled: this page still has it */ }
    hash.delete("token");
    query.delete("token");
    const q = query.toString(), h = hash.toString();
    history.replaceState(history.state, "", location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
    return given;
  }

  const token = take();

  // What to do about a 401, as nodes, for the page named ("" is the console, or "dashboard").
  function hint(status, page) {
    const base = location.origin + location.pathname.replace(/[^/]*$/, "");
    const code = (text) => {
      const node = document.createElement("code");
      node.textContent = text;
      return node;
    };
    const parts = token
      ? ["The token was refused (HTTP " + status + "): open ", code(base + page + "#token=TOKEN"), " with a valid one."]
      : ["This server needs a token (HTTP " + status + "): open the console with ", code(base + "#token=TOKEN"),
         " and follow its Dashboard link, or open ", code(base + "dashboard#token=TOKEN"), "."];
    const fragment = document.createDocumentFragment();
    fragment.append(...parts);
    return fragment;
  }

  window.myagentToken = {
    value: token,
    hint,
    // A link to another page of this server that hands the token on in its fragment.
    link: (path) => path + (token ? "#token=" + encodeURIComponent(token) : ""),
    // Headers for fetch(): a header, not the query string, so the token stays out of logs.
    headers: () => (token ? { Authorization: "Bearer " + token } : {}),
  };
})();
