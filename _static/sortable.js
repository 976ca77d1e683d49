// Sorts a table made by wsolkit.reporting.sortable_html by the column whose header is
// clicked: numbers by their data-sort value (empty ones last), text alphabetically; a second
// click on the same header reverses the order.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("table.wsol-sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (header, column) {
      header.style.cursor = "pointer";
      header.addEventListener("click", function () {
        var ascending = header.getAttribute("data-order") !== "ascending";
        headers.forEach(function (h) { h.removeAttribute("data-order"); });
        header.setAttribute("data-order", ascending ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var key = function (row) {
          var cell = row.cells[column];
          if (cell.hasAttribute("data-sort")) {
            var text = cell.getAttribute("data-sort");
            return text === "" ? null : parseFloat(text);
          }
          return cell.textContent.trim().toLowerCase();
        };
        rows.sort(function (a, b) {
          var x = key(a), y = key(b);
          if (x === null || y === null) { return (x === null) - (y === null); }
          var order = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
});
