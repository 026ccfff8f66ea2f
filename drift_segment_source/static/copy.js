// Copy buttons for values shown to paste elsewhere (a webhook URL, a shared secret).
// Without JavaScript the buttons stay hidden and the value itself selects as a whole.
"use strict";

function copyValue(button) {
  const value = document.getElementById(button.dataset.copy);
  if (!value) { return; }
  const text = value.textContent.trim();
  const said = () => {
    let note = button.nextElementSibling;
    if (!note || !note.classList.contains("copy-done")) {
      note = document.createElement("span");
      note.className = "copy-done";
      note.setAttribute("role", "status");
      button.after(note);
    }
    note.textContent = "Copied";
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(said, () => selectValue(value));
  } else {
    selectValue(value);
    if (document.execCommand && document.execCommand("copy")) { said(); }
  }
}

function selectValue(value) {
  const range = document.createRange();
  range.selectNodeContents(value);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", () => copyValue(button));
  }
});
