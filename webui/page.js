// Page helpers for cosyfast: the body of the microphone note's js_on_load (gr.HTML, webui/app.py),
// run with `element` (that component).
// 1. The microphone works only in a secure context (HTTPS or localhost): otherwise the note
//    saying how to serve the app over TLS is shown.
// 2. Gradio renders the radio group and the audio blocks with a visible label that is not their
//    accessible name; the label text is given to them as aria-label (role "group"), so screen
//    readers and scripts find "Mode", "Prompt audio" and "Output audio".
if (!window.isSecureContext) element.querySelector("#cosyfast-mic-note").hidden = false;

const GROUPS = ["cosyfast-mode", "cosyfast-prompt-audio", "cosyfast-output-audio"];
let tries = 0;
const timer = setInterval(() => {
  let named = 0;
  for (const id of GROUPS) {
    const block = document.getElementById(id);
    const label = block && block.querySelector('[data-testid="block-info"], [data-testid="block-label"]');
    if (!label || !label.textContent.trim()) continue;
    block.setAttribute("role", "group");
    block.setAttribute("aria-label", label.textContent.trim());
    named += 1;
  }
  if (named === GROUPS.length || ++tries > 40) clearInterval(timer);
}, 250);
