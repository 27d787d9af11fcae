// The simulators' agent pages (/_sim/ui of ccaas, genesys, zendesk): the helpers they share.
"use strict";
const drafts = {};  // unsent replies by case, kept across re-renders
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}
async function post(path, body) {
  const r = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                               body: JSON.stringify(body || {})});
  return r.json();
}
function safeUrl(u) {
  return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null;
}
// A file as the agent sees it: an image inline, any other file as a link.
function fileNode(type, url, label, isImage) {
  const safe = safeUrl(url);
  if (!safe) return el("div", "", "[" + type + "] " + (label || url || ""));
  if (isImage) {
    const img = el("img", "thumb"); img.src = safe; img.alt = label || "image";
    const a = el("a"); a.href = safe; a.target = "_blank"; a.rel = "noopener"; a.append(img);
    return a;
  }
  const a = el("a", "", "[" + type + "] " + (label || safe));
  a.href = safe; a.target = "_blank"; a.rel = "noopener";
  return a;
}
// The bar's "go down" / "come up" buttons; `render` redraws the page after each.
function wireUpDown(render) {
  document.getElementById("down").onclick = async () => { await post("/_sim/down"); render(); };
  document.getElementById("up").onclick = async () => { await post("/_sim/up"); render(); };
}
// A page listing cases, drawn now, every `everyMs` and after the bar's buttons: the status
// line (`statusText` of /_sim/status), then the items of `listUrl` (`items` picks them out
// of the answer) newest first, each drawn by `render` into #`rootId` (`empty` when there
// are none). The list is left alone while the agent types in one of `fields`.
// Returns the redraw function (for handlers that change something).
function listPage({listUrl, items, render, rootId, empty, statusText, fields, everyMs}) {
  async function redraw() {
    try {
      const [found, status] = await Promise.all([
        fetch(listUrl).then(r => r.json()), fetch("/_sim/status").then(r => r.json())]);
      document.getElementById("status").textContent = statusText(status);
      const focused = document.activeElement && fields.includes(document.activeElement.name);
      if (focused) return;  // do not re-render under the typing agent
      const list = items(found);
      const root = document.getElementById(rootId);
      root.replaceChildren(...list.slice().reverse().map(render));
      if (!list.length) root.append(el("p", "meta", empty));
    } catch (e) {
      document.getElementById("status").textContent = "simulator unreachable";
    }
  }
  wireUpDown(redraw);
  redraw();
  setInterval(redraw, everyMs);
  return redraw;
}
