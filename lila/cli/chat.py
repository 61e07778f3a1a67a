"""`lila chat [MODEL]`: an interactive conversation in the terminal.

Ctrl-C stops the answer being written, not the chat; Ctrl-D or /quit leaves. A turn that
fails (a message too long for the context, a template error, the model file changed on
disk) is reported in one line and leaves the conversation as it was before that message.
"""
from __future__ import annotations

import argparse
import sys

from lila.cli.options import (AdapterRequest, add_model_options, add_sampling_options, adapter_requests,
                              describe_adapter, load_model, megabytes, number, sampling_kwargs)
from lila.cli.text import accept_any_stdin, decoded, decoded_argument
from lila.errors import ContextOverflowError, LilaError, ModelChangedError, one_line

HELP = """commands:
  /system TEXT   set the system message (and start over)
  /reset         forget the conversation
  /reload        load the model file again (after it changed on disk); the conversation
                 and the adapters stay
  /adapter       list the namespaces of the memory fabric and their adapters
  /adapter load NAMESPACE PATH   put a LoRA adapter (PEFT directory or GGUF) in a namespace
  /adapter unload NAMESPACE      empty a namespace
  /adapter scale NAMESPACE S     scale a namespace's adapter (0: off)
  /quit          leave (or Ctrl-D)
Ctrl-C stops the current answer."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, model_required=False)
    parser.add_argument("--system", default=None, help="system message")
    add_sampling_options(parser)


def run(args: argparse.Namespace) -> int:
    try:
        import readline  # noqa: F401  (line editing and input history where available)
    except ImportError:
        pass
    interactive = sys.stdin.isatty()
    options = sampling_kwargs(args)
    adapters = adapter_requests(args)
    accept_any_stdin()   # a line that is not UTF-8 must not end the chat
    print("loading model...", file=sys.stderr, flush=True)
    chat = Chat(args, options, adapters)
    try:
        print(f"{chat.describe()}. Type /help for commands.", file=sys.stderr)
        while True:
            try:
                line = input(">>> " if interactive else "")
            except EOFError:
                print(file=sys.stderr)
                return 0
            except KeyboardInterrupt:
                print("\n(use /quit or Ctrl-D to leave)", file=sys.stderr)
                continue
            line = decoded(line, "the line", sys.stdin.encoding)
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                if not chat.command(text):
                    return 0
            else:
                chat.say(line)
    finally:
        chat.close()


class Chat:
    """A conversation and the model answering it. The model may be replaced (/reload) while
    the conversation goes on; a failed turn leaves `messages` as they were before it."""

    def __init__(self, args: argparse.Namespace, options: dict, adapters: dict[str, AdapterRequest]):
        self.args, self.options = args, options
        self.system = decoded_argument(args.system, "--system")
        self.messages = _start(self.system)
        self.model = load_model(args, adapters)
        self.load_error: str | None = None   # why there is no model, after a failed /reload
        # The adapters the next model (/reload) gets: what the fabric held when closed
        self.adapters = adapters

    def describe(self) -> str:
        m = self.model
        streaming = ", weights streaming from disk" if m.low_memory else ""
        loaded = [f"{ns.name}={one_line(ns.path)}" for ns in m.fabric.namespaces if ns.loaded]
        adapters = f"; adapters {', '.join(loaded)}" if loaded else ""
        return (f"{m.name} ({m.config.arch}, context {m.n_ctx}, "
                f"~{sum(m.memory.values()) >> 20} MB{streaming}{adapters})")

    def close(self) -> None:
        if self.model is not None:
            self.adapters = {ns.name: AdapterRequest(ns.path, ns.scale)
                             for ns in self.model.fabric.namespaces if ns.loaded}
            self.model.close()
            self.model = None

    def command(self, text: str) -> bool:
        """Carry out a /command; False means leave."""
        command, _, rest = text.partition(" ")
        if command in ("/quit", "/exit", "/bye"):
            return False
        if command == "/reset":
            self.messages = _start(self.system)
            print("(conversation cleared)", file=sys.stderr)
        elif command == "/system":
            self.system = rest.strip() or None
            self.messages = _start(self.system)
            print("(system message set; conversation cleared)", file=sys.stderr)
        elif command == "/reload":
            self.reload()
        elif command == "/adapter":
            self.adapter(rest)
        elif command == "/help":
            print(HELP, file=sys.stderr)
        else:
            print(f"unknown command {command}; /help lists them", file=sys.stderr)
        return True

    def reload(self) -> None:
        # The old model goes first: two copies of a large model may not fit in memory.
        self.close()
        print("loading model...", file=sys.stderr, flush=True)
        try:
            self.model = load_model(self.args, {})   # adapters below: one failing leaves the model
        except LilaError as e:
            self.load_error = str(e)
            print(f"error: {e}; /reload tries again", file=sys.stderr)
            return
        except KeyboardInterrupt:
            self.load_error = "loading was stopped"
            print("\n(loading stopped; /reload tries again)", file=sys.stderr)
            return
        self.load_error = None
        for namespace, (path, scale) in self.adapters.items():
            try:
                self.model.fabric.load(namespace, path, scale=scale)
            except LilaError as e:
                print(f"error: {e}; {namespace} is left empty", file=sys.stderr)
        print(f"(reloaded {self.describe()}; the conversation goes on)", file=sys.stderr)

    def adapter(self, rest: str) -> None:
        """/adapter [load NAMESPACE PATH | unload NAMESPACE | scale NAMESPACE S]; a failure
        is one line and leaves the adapters as they were."""
        if not self.has_model():
            return
        fabric = self.model.fabric
        action, namespace, argument = (rest.split(None, 2) + ["", "", ""])[:3]
        try:
            if not action:
                for ns in fabric.namespaces:
                    print(f"  {ns.name:<8} {describe_adapter(ns) if ns.loaded else 'empty'}",
                          file=sys.stderr)
                print(f"  adapters take {megabytes(fabric.memory)}", file=sys.stderr)
            elif action == "load" and argument:
                loaded = fabric.load(namespace, argument)
                print(f"({namespace} holds {describe_adapter(loaded)})", file=sys.stderr)
            elif action == "unload" and namespace and not argument:
                fabric.unload(namespace)
                print(f"({namespace} is empty)", file=sys.stderr)
            elif action == "scale" and argument:
                scale = number("the scale", argument)
                fabric.set_scale(namespace, scale)
                print(f"({namespace} scaled by {scale:g})", file=sys.stderr)
            else:
                print("usage: /adapter [load NAMESPACE PATH | unload NAMESPACE | scale NAMESPACE S]",
                      file=sys.stderr)
        except LilaError as e:
            print(f"error: {e}", file=sys.stderr)

    def has_model(self) -> bool:
        """True, or False after saying why there is none."""
        if self.model is None:
            print(f"error: no model is loaded ({self.load_error}); /reload loads it",
                  file=sys.stderr)
        return self.model is not None

    def say(self, line: str) -> None:
        """One turn: the user's line and the model's answer join the conversation, or, if
        anything fails, neither does and the failure is one line on stderr."""
        if not self.has_model():
            return
        changed = self.model.file_changed()
        if changed:
            # Its weights may be half old, half new: never answer from them.
            print(f"error: {changed}; type /reload to load it again (the conversation stays)",
                  file=sys.stderr)
            return
        self.messages.append({"role": "user", "content": line})
        try:
            answer = _answer(self.model, self.messages, self.options)
        except LilaError as e:
            self.messages.pop()
            print(f"error: {e}{_advice(e)}", file=sys.stderr)
            return
        self.messages.append({"role": "assistant", "content": answer})


def _advice(error: LilaError) -> str:
    if isinstance(error, ContextOverflowError):
        return "; /reset starts a new conversation, or send a shorter message"
    if isinstance(error, ModelChangedError):
        return "; type /reload (the conversation stays)"
    return " (the message was not added to the conversation)"


def _start(system: str | None) -> list[dict]:
    return [{"role": "system", "content": system}] if system else []


def _answer(model, messages: list[dict], options: dict) -> str:
    completion = model.chat(messages, **options)
    pieces: list[str] = []
    try:
        for piece in completion:
            pieces.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
        note = ""
    except KeyboardInterrupt:
        completion.close()   # Ctrl-C in a write leaves it suspended, its stats unfinished
        note = ", stopped"
    except LilaError:
        if pieces:           # the error line follows the part of the answer already shown
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise
    s = completion.stats
    if completion.finish_reason == "length" and s.prompt_tokens + s.completion_tokens >= model.n_ctx:
        note += ", the context is full: /reset starts a new conversation"
    footer = (f"[{s.completion_tokens} tokens, {s.decode_tps:.1f} tok/s; prompt {s.prompt_tokens} "
              f"tokens, {s.prefill_tps:.1f} tok/s{note}]")
    sys.stdout.write("\n")
    print(f"\033[2m{footer}\033[0m" if sys.stderr.isatty() else footer, file=sys.stderr)
    return "".join(pieces)
