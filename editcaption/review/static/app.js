// Review pages: zoom and compare the two images, and keyboard shortcuts declared as data-key attributes.
(function () {
  "use strict";
  const viewer = document.getElementById("viewer");
  let zoom = 1;

  function applyZoom() {
    document.querySelectorAll("img.zoomable").forEach((img) => {
      if (!img.naturalWidth) return;
      img.style.width = Math.round(img.naturalWidth * zoom) + "px";
    });
    const label = document.getElementById("zoom-level");
    if (label) label.textContent = Math.round(zoom * 100) + "%";
  }

  function fitZoom() {
    const img = document.getElementById("img-source");
    const box = img && img.parentElement;
    if (!img || !img.naturalWidth || !box) return 1;
    return Math.min(box.clientWidth / img.naturalWidth, box.clientHeight / img.naturalHeight || Infinity, 1);
  }

  function setOpacity(value) {
    const slider = document.getElementById("overlay-opacity");
    const over = document.getElementById("overlay-target");
    if (!slider || !over) return;
    slider.value = Math.max(0, Math.min(100, value));
    over.style.opacity = slider.value / 100;
  }

  if (viewer) {
    document.querySelectorAll("img.zoomable").forEach((img) => img.addEventListener("load", applyZoom));
    applyZoom();
    viewer.querySelectorAll("[data-zoom]").forEach((button) =>
      button.addEventListener("click", () => {
        const how = button.dataset.zoom;
        if (how === "in") zoom = Math.min(zoom * 1.25, 8);
        else if (how === "out") zoom = Math.max(zoom / 1.25, 0.1);
        else if (how === "full") zoom = 1;
        else zoom = fitZoom();
        applyZoom();
      })
    );
    const toggle = document.getElementById("toggle-compare");
    toggle.addEventListener("click", () => {
      const overlay = viewer.dataset.mode !== "overlay";
      viewer.dataset.mode = overlay ? "overlay" : "side";
      viewer.querySelector(".panes").hidden = overlay;
      viewer.querySelector(".overlay").hidden = !overlay;
      viewer.querySelectorAll(".opacity, [data-opacity]").forEach((el) => (el.hidden = !overlay));
      toggle.firstChild.textContent = overlay ? "Side by side " : "Overlay ";
    });
    const slider = document.getElementById("overlay-opacity");
    slider.addEventListener("input", () => setOpacity(Number(slider.value)));
    viewer.querySelectorAll("[data-opacity]").forEach((button) =>
      button.addEventListener("click", () =>
        setOpacity(Number(slider.value) + (button.dataset.opacity === "+" ? 10 : -10))
      )
    );
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || (target.tagName === "INPUT" && /^(text|password|search|number)$/.test(target.type)));
  }

  function byKey(key) {
    return Array.from(document.querySelectorAll("[data-key]")).find((el) => el.dataset.key === key && !el.hidden);
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.metaKey) return;
    if (event.key === "Enter" && event.ctrlKey) {
      const submit = byKey("Enter");
      if (submit) { event.preventDefault(); submit.click(); }
      return;
    }
    if (event.ctrlKey || typing(event.target)) {
      if (event.key === "Escape" && event.target.blur) event.target.blur();
      return;
    }
    const key = event.key === "=" ? "+" : event.key;
    const el = byKey(key);
    if (!el) return;
    event.preventDefault();
    if (el.tagName === "TEXTAREA") { el.focus(); el.setSelectionRange(el.value.length, el.value.length); }
    else el.click();
  });
})();
