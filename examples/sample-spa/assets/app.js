document.getElementById("origin").textContent = location.origin;
let count = Number(localStorage.getItem("clicks") || 0);
const out = document.getElementById("count");
out.textContent = count;
document.getElementById("click").addEventListener("click", () => {
  count += 1;
  localStorage.setItem("clicks", String(count));
  out.textContent = count;
});
