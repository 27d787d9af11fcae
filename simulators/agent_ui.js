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
