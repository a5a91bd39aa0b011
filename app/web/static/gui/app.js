// Small progressive enhancements; every page works without them.
"use strict";
(function () {
  // Forms that act on many jobs ask first: data-confirm holds the question.
  document.addEventListener("submit", function (event) {
    const form = event.target;
    const submitter = event.submitter;
    const question = (submitter && submitter.dataset.confirm) || form.dataset.confirm;
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
  // A "select all" checkbox ticks every row checkbox of its form.
  document.querySelectorAll("input[data-select-all]").forEach(function (box) {
    box.addEventListener("change", function () {
      const form = box.form || box.closest("form");
      if (!form) return;
      form.querySelectorAll("input[type=checkbox][name=" + box.dataset.selectAll + "]").forEach(
        function (row) { row.checked = box.checked; });
    });
  });
})();
