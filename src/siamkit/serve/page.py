"""The web page served at ``/``: verify two images, or search the gallery with one. Plain HTML and a small
script calling the JSON API (no external assets, so it works offline and under a strict CSP)."""

PAGE_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>siamkit</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
  h1 { margin-bottom: .2rem; } .muted { color: #666; font-size: .9rem; }
  section { border: 1px solid #ddd; border-radius: 8px; padding: 1rem 1.2rem; margin: 1.2rem 0; }
  .row { display: flex; gap: 1.5rem; flex-wrap: wrap; align-items: flex-end; }
  .pick { display: flex; flex-direction: column; gap: .4rem; }
  .pick img, .hit img { width: 96px; height: 96px; object-fit: contain; background: #f4f4f4;
    border: 1px solid #ccc; image-rendering: pixelated; }
  button { padding: .45rem 1.1rem; font-size: 1rem; cursor: pointer; }
  .verdict { font-size: 1.3rem; font-weight: 600; margin-top: .8rem; }
  .same { color: #1a7f37; } .different { color: #c62828; } .error { color: #c62828; }
  #search-results { display: flex; flex-wrap: wrap; gap: .8rem; margin-top: .8rem; }
  .hit { width: 104px; text-align: center; font-size: .8rem; }
</style>
</head>
<body>
<h1>siamkit</h1>
<div class="muted" id="model-info">loading model information…</div>

<section>
  <h2>Verify: same identity?</h2>
  <div class="row">
    <label class="pick">Image A <input type="file" id="file-a" accept="image/*"><img id="preview-a" alt=""></label>
    <label class="pick">Image B <input type="file" id="file-b" accept="image/*"><img id="preview-b" alt=""></label>
    <button id="verify-btn" type="button">Verify</button>
  </div>
  <div id="verify-result" class="verdict" aria-live="polite"></div>
</section>

<section>
  <h2>Search the gallery</h2>
  <div class="row">
    <label class="pick">Query image <input type="file" id="search-file" accept="image/*">
      <img id="preview-q" alt=""></label>
    <label class="pick">k <input type="number" id="search-k" value="10" min="1" max="100" style="width:5rem"></label>
    <button id="search-btn" type="button">Search</button>
  </div>
  <div id="search-status" class="muted" aria-live="polite"></div>
  <div id="search-results"></div>
</section>

<script>
const $ = (id) => document.getElementById(id);
function preview(input, img) {
  input.addEventListener("change", () => {
    if (input.files.length) img.src = URL.createObjectURL(input.files[0]);
  });
}
preview($("file-a"), $("preview-a"));
preview($("file-b"), $("preview-b"));
preview($("search-file"), $("preview-q"));

async function post(url, form) {
  const response = await fetch(url, { method: "POST", body: form });
  let body = null;
  try { body = await response.json(); } catch (e) { body = { detail: response.statusText }; }
  if (!response.ok) throw new Error(body.detail || ("HTTP " + response.status));
  return body;
}

fetch("/health").then((r) => r.json()).then((h) => {
  const thr = h.threshold === null ? "none" : h.threshold.toFixed(4);
  const gal = h.gallery ? h.gallery.size + " items (" + h.gallery.index.kind + ")" : "none loaded";
  $("model-info").textContent = "model " + h.model_hash.slice(0, 12) + " on " + h.backend + " · " + h.distance
    + " distance · threshold " + thr + " · gallery: " + gal;
}).catch(() => { $("model-info").textContent = "service unreachable"; });

$("verify-btn").addEventListener("click", async () => {
  const out = $("verify-result");
  const a = $("file-a").files[0], b = $("file-b").files[0];
  if (!a || !b) { out.className = "verdict error"; out.textContent = "Choose two images first."; return; }
  const form = new FormData();
  form.append("image_a", a);
  form.append("image_b", b);
  out.className = "verdict"; out.textContent = "…";
  try {
    const r = await post("/verify", form);
    const verdict = r.same === null ? "no threshold saved" : (r.same ? "same" : "different");
    out.className = "verdict " + (r.same === null ? "" : (r.same ? "same" : "different"));
    out.dataset.verdict = verdict;
    out.textContent = verdict.toUpperCase() + " · distance " + r.distance.toFixed(4)
      + " · threshold " + (r.threshold === null ? "none" : r.threshold.toFixed(4));
  } catch (e) { out.className = "verdict error"; out.textContent = "Error: " + e.message; }
});

$("search-btn").addEventListener("click", async () => {
  const status = $("search-status"), list = $("search-results");
  const q = $("search-file").files[0];
  list.replaceChildren();
  if (!q) { status.className = "error"; status.textContent = "Choose a query image first."; return; }
  const form = new FormData();
  form.append("image", q);
  form.append("k", $("search-k").value);
  status.className = "muted"; status.textContent = "searching…";
  try {
    const r = await post("/search", form);
    status.textContent = r.results.length + " nearest (" + r.metric + " distance)";
    for (const hit of r.results) {
      const card = document.createElement("div");
      card.className = "hit";
      card.dataset.id = hit.id;
      const img = document.createElement("img");
      img.src = hit.image_url; img.alt = "gallery item " + hit.id;
      const caption = document.createElement("div");
      caption.className = "caption";
      caption.textContent = "#" + hit.rank + " · " + hit.distance.toFixed(4) + (hit.label ? " · " + hit.label : "")
        + (hit.match ? " ✓ match" : "");
      if (hit.match) caption.title = "within the verification threshold: the model takes it for the same identity";
      card.append(img, caption);
      list.append(card);
    }
  } catch (e) { status.className = "error"; status.textContent = "Error: " + e.message; }
});
</script>
</body>
</html>
"""
