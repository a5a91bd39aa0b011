// The Jobs filter form leaves blank fields out of the URL, so links stay short and readable.
// Without this script the form still works (blank fields mean "any").
"use strict";
(function () {
  const form = document.getElementById("job-filters");
  if (!form) return;
  form.addEventListener("submit", function () {
    form.querySelectorAll("input, select").forEach(function (field) {
      if (field.name && field.value === "") field.disabled = true;
    });
  });
  // Coming back (bfcache) must not leave fields disabled.
  window.addEventListener("pageshow", function () {
    form.querySelectorAll("input, select").forEach(function (field) { field.disabled = false; });
  });
})();
