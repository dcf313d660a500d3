// Sort the leaderboard by a column: numbers descending first (best first), missing values always last.
(function () {
  var table = document.getElementById("board");
  if (!table) { return; }
  var body = table.tBodies[0];
  function sortBy(th) {
    var col = +th.dataset.col;
    var descending = th.getAttribute("aria-sort") !== "descending";
    var numeric = th.dataset.type === "number";
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
      if (x === "" && y === "") { return 0; }
      if (x === "") { return 1; }
      if (y === "") { return -1; }
      var d = numeric ? (+x) - (+y) : x.localeCompare(y);
      return descending ? -d : d;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    table.querySelectorAll("th[data-col]").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  table.querySelectorAll("th[data-col] button.sort").forEach(function (button) {
    button.addEventListener("click", function () { sortBy(button.closest("th")); });
  });
  var toggle = document.getElementById("show-reported");
  if (toggle) {
    toggle.addEventListener("change", function () {
      body.querySelectorAll("tr.reported").forEach(function (row) { row.hidden = !toggle.checked; });
    });
  }
})();
