"""The teacher's page: a local Gradio app over a run and its data folder, in three tabs.

    Judge     the queued pairs (RUN/review/next_pairs.csv less the pairs already judged), side by side; keys
              a (A is better), b (B is better), t (tie), s (skip), u (undo); each answer is one row appended
              at once to DATA_DIR/comparisons.csv (answers.py). Tiers and the model's guess are not shown: they
              would steer the judgement.
    Audit     RUN/review/label_audit.csv, most doubtful first, the image large; a corrected tier is one row of
              DATA_DIR/corrections.csv (metadata.csv is never edited).
    Try       one or two drawings: score, tier hint and P(S..C) for a tier model, P(A better) for two, and the
              training works whose scores under the same model are nearest.

It binds 127.0.0.1 only, never makes a share link, has Gradio's analytics off, no share buttons and no web
fonts: nothing leaves the machine. The model is `load_ranker()` (review.py passes artrank.load of the run,
the ONNX export when the run has one), loaded on first use of the Try tab.
"""

import os
from pathlib import Path

from .answers import Answers
from .errors import ArtrankError
from .review_queues import (
    LABEL_AUDIT,
    NEXT_PAIRS,
    DataFolder,
    ReviewError,
    audit_rows,
    missing_note,
    nearest_by_score,
    pending_pairs,
    training_works,
)
from .tables import TIERS

# Keys of the Judge tab: a keydown anywhere but in a text field clicks the button of that id while it shows.
KEYS_JS = """
() => {
  const buttons = {a: "judge-a", b: "judge-b", t: "judge-tie", s: "judge-skip", u: "judge-undo"};
  document.addEventListener("keydown", (event) => {
    const field = event.target && ["INPUT", "TEXTAREA", "SELECT"].includes(event.target.tagName);
    const id = buttons[event.key.toLowerCase()];
    if (field || !id || event.ctrlKey || event.metaKey || event.altKey) return;
    const button = document.getElementById(id);
    if (button && button.offsetParent !== null) { event.preventDefault(); button.click(); }
  });
}
"""
# Drawings fill their frame whatever their size (a small scan is shown large, its pixels kept sharp).
CSS = ".artrank-large img { width: 100% !important; height: 100% !important; object-fit: contain; }"
CHOICES = {"judge-a": "a", "judge-b": "b", "judge-tie": "tie"}
NO_RATER = "Type your name above first: it is written with each answer."


def add_arguments(parser) -> None:
    """The page's own argument (the port is a config key)."""
    parser.add_argument("--rater", default="", help="the rater's name, written with each answer (default: asked "
                                                    "on the page before the first answer)")


class Session:
    """One browser tab's place in the queues and the answers it wrote (its undo undoes only those)."""

    def __init__(self, page: "Page"):
        self.answers, self.note = Answers(page.data.data_dir), missing_note(page.output_dir, NEXT_PAIRS, "pairs")
        self.queue, self.judged, self.audit, self.at = [], [], [], 0
        self.audit_note = missing_note(page.output_dir, LABEL_AUDIT, "audit")
        try:
            self.queue = [] if self.note else pending_pairs(page.output_dir, page.data)
        except ArtrankError as err:
            self.note = str(err)
        try:
            self.audit = [] if self.audit_note else audit_rows(page.output_dir, page.data)
        except ArtrankError as err:
            self.audit_note = str(err)


class Page:
    """The run and data folder the page works on, and the model, loaded once when first needed."""

    def __init__(self, output_dir: str | os.PathLike, data_dir: str | os.PathLike, load_ranker):
        self.output_dir, self.data = str(output_dir), DataFolder(data_dir)
        self.train, self.load_ranker = training_works(output_dir), load_ranker
        self.ranker, self.train_scores = None, None

    def model(self):
        if self.ranker is None:
            self.ranker = self.load_ranker()
        return self.ranker

    # ------------------------------------------------------------ judge

    def pair_view(self, session: Session, status: str = ""):
        if session.note:
            return None, None, session.note, status
        if not session.queue:
            return None, None, "Every queued pair is judged. Thank you!", status
        pair = session.queue[0]
        info = f"Pair {len(session.judged) + 1}: {len(session.queue)} left in the queue. Which drawing is better?"
        return self.data.path(pair["image_a"]), self.data.path(pair["image_b"]), info, status

    def judge(self, button: str, rater: str, session: Session):
        if session.note or not session.queue:
            return self.pair_view(session, "Nothing to judge.")
        if not rater.strip():
            return self.pair_view(session, NO_RATER)
        pair = session.queue[0]
        try:
            session.answers.judge(pair["image_a"], pair["image_b"], CHOICES[button], rater)
        except ArtrankError as err:
            return self.pair_view(session, f"Not written: {err}")
        session.judged.append(session.queue.pop(0))
        return self.pair_view(session, f"Written to {session.answers.comparisons.path}: {CHOICES[button]}.")

    def skip(self, session: Session):
        if session.queue:
            session.queue.append(session.queue.pop(0))  # asked again after the others
        return self.pair_view(session, "Skipped: it comes back at the end of the queue.")

    def undo(self, session: Session):
        try:
            removed = session.answers.comparisons.undo()
        except ArtrankError as err:
            return self.pair_view(session, f"Not undone: {err}")
        session.queue.insert(0, session.judged.pop())
        return self.pair_view(session, f"Undone: {','.join(removed)} removed from {session.answers.comparisons.path}.")

    # ------------------------------------------------------------ audit

    def audit_view(self, session: Session, status: str = ""):
        if session.audit_note or not session.audit:
            return None, session.audit_note or "The audit lists no work.", None, status
        row, tiers = session.audit[session.at], self.data.tiers()
        now = tiers[row["file_name"]]
        probabilities = " ".join(f"P({t}) {row[f'p_{t}']}" for t in TIERS if row[f"p_{t}"])
        details = (f"**{session.at + 1} of {len(session.audit)}** (rank {row['rank']}): `{row['file_name']}` by "
                   f"{row['artist']}, {row['split']} split\n\nGiven tier **{row['tier']}**"
                   + (f" (now **{now}**, corrected since the audit)" if now != row["tier"] else "")
                   + f"; out-of-fold score {row['oof_score']}, hint {row['hint'] or '-'} {probabilities}; "
                     f"doubt {row['doubt']}")
        return self.data.path(row["file_name"]), details, now, status

    def move(self, step: int, session: Session):
        if session.audit:
            session.at = (session.at + step) % len(session.audit)
        return self.audit_view(session)

    def correct(self, corrected: str, rater: str, session: Session):
        if not session.audit:
            return self.audit_view(session, "Nothing to correct.")
        if not rater.strip():
            return self.audit_view(session, NO_RATER)
        name = session.audit[session.at]["file_name"]
        try:
            session.answers.correct(name, self.data.tiers()[name], corrected, rater)
        except ArtrankError as err:
            return self.audit_view(session, f"Not written: {err}")
        status = f"Written to {session.answers.corrections.path}: {name} is {corrected}."
        return self.move(1, session)[:3] + (status,)

    def undo_correction(self, session: Session):
        try:
            removed = session.answers.corrections.undo()
        except ArtrankError as err:
            return self.audit_view(session, f"Not undone: {err}")
        return self.audit_view(session, f"Undone: {','.join(removed)} removed from {session.answers.corrections.path}.")

    # ------------------------------------------------------------ try

    def nearest(self, score: float) -> list[tuple[str, str]]:
        """The NEAREST training works by score, as (image, caption)."""
        if self.train_scores is None:
            self.train_scores = self.model().score([self.data.path(n) for n in self.train["file_name"]])
        works = self.train.iloc[nearest_by_score(score, self.train_scores)]
        return [(self.data.path(w.file_name), f"{w.tier} | {self.train_scores[i]:+.3f} | {w.artist}")
                for i, w in zip(works.index, works.itertuples())]

    def describe(self, letter: str, read: dict) -> str:
        model, score = self.model(), read["score"]
        probabilities = model.tier_probabilities(score)
        shown = ", ".join(f"P({t}) {p:.2f}" for t, p in probabilities.items()) if probabilities else ""
        odd = model.unfamiliar(read["novelty"]) if "novelty" in read else None
        return f"**{letter}**: score {score:+.4f}, tier hint {model.tier_hint(score) or '-'}" + (
            f"; {shown}" if shown else "") + (" **(unlike every training drawing: the score is a guess)**" if odd
                                              else "")

    def try_drawings(self, path_a: str | None, path_b: str | None):
        paths = [p for p in (path_a, path_b) if p]
        if not paths:
            return "Drop one or two drawings first.", [], []
        try:
            reads = self.model().read(paths)
            scores = [read["score"] for read in reads]
            lines = [self.describe(letter, read) for letter, read in zip("AB", reads)]
            if len(paths) == 2:
                p = self.model().compare(*paths).p_a_better
                lines.append(f"P(A better than B) = {p:.3f}" if p is not None else "P(A better) unavailable: the "
                             "run has no calibration")
            galleries = [self.nearest(score) for score in scores]
        except ArtrankError as err:
            return f"Not scored: {err}", [], []
        return "\n\n".join(lines), galleries[0], galleries[1] if len(galleries) > 1 else []


def blocks(page: Page, rater: str = ""):
    """The page's Gradio Blocks (not yet launched)."""
    import gradio as gr

    with gr.Blocks(title="artrank review", analytics_enabled=False) as app:
        session = gr.State(None)
        name = gr.Textbox(label="Your name (written with each answer)", value=rater, elem_id="rater")
        with gr.Tab("Judge pairs", elem_id="tab-judge"):
            info, status = gr.Markdown(elem_id="judge-info"), gr.Markdown(elem_id="judge-status")
            with gr.Row():
                image_a, image_b = (gr.Image(label=side, type="filepath", interactive=False, buttons=[], height=480,
                                             elem_classes=["artrank-large"]) for side in "AB")
            with gr.Row():
                keys = [gr.Button(text, elem_id=elem) for text, elem in (
                    ("A is better (a)", "judge-a"), ("Tie (t)", "judge-tie"), ("B is better (b)", "judge-b"),
                    ("Skip (s)", "judge-skip"), ("Undo (u)", "judge-undo"))]
            judged = [image_a, image_b, info, status]
            for button in keys[:3]:
                button.click(lambda r, s, b=button.elem_id: page.judge(b, r, s), [name, session], judged)
            keys[3].click(page.skip, [session], judged)
            keys[4].click(page.undo, [session], judged)
        with gr.Tab("Audit labels", elem_id="tab-audit"):
            with gr.Row():
                audit_image = gr.Image(type="filepath", interactive=False, buttons=[], height=640, scale=3,
                                       show_label=False, elem_classes=["artrank-large"])
                with gr.Column(scale=2):
                    details, audit_status = gr.Markdown(elem_id="audit-details"), gr.Markdown(elem_id="audit-status")
                    tier = gr.Radio(list(TIERS), label="Tier it should have", elem_id="audit-tier")
                    record = gr.Button("Record this tier", elem_id="audit-record", variant="primary")
                    with gr.Row():
                        back = gr.Button("Previous", elem_id="audit-back")
                        forward = gr.Button("Next", elem_id="audit-next")
                    undo = gr.Button("Undo my last correction", elem_id="audit-undo")
            shown = [audit_image, details, tier, audit_status]
            record.click(page.correct, [tier, name, session], shown)
            back.click(lambda s: page.move(-1, s), [session], shown)
            forward.click(lambda s: page.move(1, s), [session], shown)
            undo.click(page.undo_correction, [session], shown)
        with gr.Tab("Try drawings", elem_id="tab-try"):
            with gr.Row():
                drop_a, drop_b = (gr.Image(label=label, type="filepath", sources=["upload"], buttons=[], height=300,
                                           elem_id=elem, elem_classes=["artrank-large"])
                                  for label, elem in (("Drawing A", "try-a"), ("Drawing B (optional)", "try-b")))
            score = gr.Button("Score", elem_id="try-score", variant="primary")
            result = gr.Markdown(elem_id="try-result")
            gr.Markdown("Nearest training works by score (tier | score | artist):")
            with gr.Row():
                near_a = gr.Gallery(label="nearest to A", columns=5, height=220, buttons=[])
                near_b = gr.Gallery(label="nearest to B", columns=5, height=220, buttons=[])
            score.click(page.try_drawings, [drop_a, drop_b], [result, near_a, near_b])

        def start():
            fresh = Session(page)
            return (fresh, *page.pair_view(fresh), *page.audit_view(fresh))

        app.load(start, None, [session, *judged, *shown])
    return app


def serve(output_dir: str | os.PathLike, data_dir: str | os.PathLike, *, port: int, load_ranker, rater: str = "",
          block: bool = True):
    """Check the run and data folder (one-line refusals), then serve the page on 127.0.0.1:port; with
    block=False return the launched Blocks (close() stops it)."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: it reads this at import
    import gradio as gr

    page = Page(output_dir, data_dir, load_ranker)
    app = blocks(page, rater)
    system_fonts = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                     font_mono=["ui-monospace", "Consolas", "monospace"])  # no web fonts fetched
    if block:
        print(f"the review page: http://127.0.0.1:{port} (this machine only; answers go to {page.data.data_dir}); "
              "Ctrl-C stops it", flush=True)
    try:
        app.launch(server_name="127.0.0.1", server_port=port, share=False, inbrowser=False,
                   prevent_thread_lock=not block, quiet=True, show_error=True, ssr_mode=False,
                   allowed_paths=[str(Path(data_dir).resolve())], js=KEYS_JS, css=CSS, theme=system_fonts,
                   footer_links=[])
    except OSError as err:  # the port is taken: gradio's message names its own settings, not ours
        raise ReviewError(f"127.0.0.1:{port}: cannot listen there ({str(err).split('.')[0]}); choose another "
                          "--port") from None
    return app
