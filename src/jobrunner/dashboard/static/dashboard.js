// The dashboard's own script (the Content-Security-Policy allows no inline script).
// - "select all" checkboxes on the job list;
// - a live update of a list is held back while jobs are ticked, so a choice is not lost;
// - forms marked data-confirm ask before they change anything.
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box.matches && box.matches("input[data-select-all]")) {
      document.querySelectorAll("input[name=job]").forEach(function (other) {
        other.checked = box.checked;
      });
    }
  });

  document.addEventListener("htmx:confirm", function (event) {
    var live = event.target;
    if (live.id === "live" && live.querySelector("input[name=job]:checked")) {
      event.preventDefault();
    }
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  });
})();
