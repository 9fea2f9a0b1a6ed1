// fanout console: the little that htmx attributes do not cover. Pages work without it.
// A "select all" checkbox ticks every row checkbox of its form, and says how many are selected.
(function () {
  "use strict";
  function update(form) {
    var boxes = form.querySelectorAll("input[type=checkbox][name=ids]");
    var checked = form.querySelectorAll("input[type=checkbox][name=ids]:checked").length;
    var all = form.querySelector("input[data-select-all]");
    if (all) {
      all.checked = boxes.length > 0 && checked === boxes.length;
      all.indeterminate = checked > 0 && checked < boxes.length;
    }
    var count = form.querySelector("[data-selected-count]");
    if (count) {
      count.textContent = checked + " selected";
    }
  }
  document.addEventListener("change", function (event) {
    var target = event.target;
    if (!(target instanceof HTMLInputElement) || !target.form) {
      return;
    }
    if (target.hasAttribute("data-select-all")) {
      target.form.querySelectorAll("input[type=checkbox][name=ids]").forEach(function (box) {
        box.checked = target.checked;
      });
    }
    if (target.hasAttribute("data-select-all") || target.name === "ids") {
      update(target.form);
    }
  });
})();
