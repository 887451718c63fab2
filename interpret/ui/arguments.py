"""Every argument of every event checked for its kind and range at the door (`admission`'s wrapper of the queue's
`push`), before anything is queued or computed, whatever the door: the page, gradio_client, a REST call, an MCP tool.

Gradio's own checks ran later, in each component's `preprocess`, and for a value of the wrong JSON kind (a list
where a number goes, a string for a slider, `null`) they failed with a `TypeError` whose message Gradio hides ("The
upstream Gradio app has raised an exception"), a traceback in the log; a list or an object where a text goes reached
the handler. Here a value of the wrong kind, a number that is not finite or out of its slider's range, a choice a
radio or checkbox group does not offer, a file that is not an upload, or a missing or extra argument is refused
with a message that names the argument (the endpoint's parameter and the page's label).

`null` is let through where the page itself sends it for an empty field (a text, a number, an image, a file, a
choice): the handler then says what is missing ("Upload an image first.").
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math

import gradio as gr

from ..limits import MAX_SPEC_CHARS, MAX_TEXT_CHARS, MAX_TEXTS
from .common import ANY_INDEX as ANY_NUMBER  # a number box's value beyond this is not one the page can mean

MAX_FIELD_CHARS = MAX_TEXTS * (MAX_TEXT_CHARS + 1) + MAX_SPEC_CHARS  # the longest text any field may hold
SPECIAL_PARAMETERS = {"request", "progress"}  # filled in by Gradio, not sent by a client


def kind_of(value) -> str:
    """`value`'s JSON kind, as a message names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a text"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@functools.lru_cache(maxsize=None)  # a page's handlers are few and fixed; every request asked again
def parameter_names(fn) -> tuple[str, ...]:
    """The names of the handler's parameters that events fill from their inputs, in order."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(name for name, parameter in parameters.items()
                 if name not in SPECIAL_PARAMETERS and parameter.kind not in (parameter.VAR_POSITIONAL,
                                                                              parameter.VAR_KEYWORD))


@functools.lru_cache(maxsize=None)
def parameter_defaults(fn) -> tuple:
    """The defaults of the handler's parameters that events fill (as `parameter_names`), `inspect.Parameter.empty`
    where one has none."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(parameters[name].default for name in parameter_names(fn))


def with_defaults(block_fn, data):
    """`data` with the trailing arguments a client left out filled with the handler's defaults, where the handler
    has one for each: an argument added to an endpoint later (the segmentation tabs' `parts`) leaves the calls
    written before it working. Anything else is returned as it is, for `refused_arguments` to judge."""
    if block_fn is None or block_fn.fn is None or not isinstance(data, list) or len(data) >= len(block_fn.inputs):
        return data
    defaults = parameter_defaults(block_fn.fn)[len(data):len(block_fn.inputs)]
    if len(defaults) != len(block_fn.inputs) - len(data) or inspect.Parameter.empty in defaults:
        return data
    return [*data, *defaults]


def argument_name(position: int, names: tuple[str, ...], component) -> str:
    name = names[position] if position < len(names) else f"argument {position + 1}"
    label = getattr(component, "label", None)
    return f"`{name}` ({label})" if label and label != name else f"`{name}`"


def choices_of(component) -> list:
    return [choice[1] if isinstance(choice, (list, tuple)) else choice for choice in (component.choices or [])]


def number_problem(value, name: str, component) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} must be a number, not {kind_of(value)}."
    if isinstance(value, int) and abs(value) > ANY_NUMBER or isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number within +-{ANY_NUMBER:,}."
    low, high = getattr(component, "minimum", None), getattr(component, "maximum", None)
    if isinstance(component, gr.Slider) and low is not None and high is not None and not low <= value <= high:
        return f"{name} must be from {low:g} to {high:g}; it was {shown_number(value)}."
    if abs(value) > ANY_NUMBER:
        return f"{name} must be a finite number within +-{ANY_NUMBER:,}."
    return None


def shown_number(value: int | float) -> str:
    """A number as a message shows it: every digit it was sent with (50.000001 is not shown as 50, the limit it
    broke), whole numbers with thousands separators."""
    if isinstance(value, int) or value.is_integer() and abs(value) < 1e16:
        return f"{int(value):,}"
    return repr(value)


def file_problem(value, name: str) -> str | None:
    if not isinstance(value, dict):
        return (f"{name} must be an uploaded file (an object with its `path`, as gradio_client's handle_file or "
                f"/gradio_api/upload gives), not {kind_of(value)}.")
    path = value.get("path")
    if not isinstance(path, str) or not path:
        return f"{name} must be an uploaded file: its `path` is missing."
    if "://" in path or path.startswith("//"):
        return (f"{name} must be an uploaded file, not an address: this app fetches nothing from the web. Upload "
                "the file first (POST /gradio_api/upload, or gradio_client's handle_file).")
    if not uploaded(path):
        return (f"{name} must be a file uploaded to this app, not a path of the server: upload it first (POST "
                "/gradio_api/upload, or gradio_client's handle_file) and send the path that answer gives.")
    return None


def uploaded(path: str) -> bool:
    """Whether `path` lies in Gradio's upload folder, the only place its preprocessing reads an input file from
    (it refused others with an error that carried no message)."""
    from gradio import utils

    try:
        return utils.is_in_or_equal(utils.abspath(path), utils.abspath(utils.get_upload_folder()))
    except (OSError, ValueError):
        return False


def value_problem(value, name: str, component) -> str | None:
    """Why `value` cannot be `component`'s input (named `name`), or None."""
    if isinstance(component, (gr.State, gr.Dataset)):
        return None
    if value is None:  # an empty field, as the page sends it: the handler says what is missing; a slider, a box to
        # tick and a choice of radio buttons always have a value on the page
        if isinstance(component, (gr.Slider, gr.Checkbox, gr.Radio, gr.CheckboxGroup)):
            return f"{name} must be given (a {type(component).__name__.lower()}'s value), not null."
        return None
    if isinstance(component, (gr.Image, gr.File)):
        if isinstance(component, gr.File) and component.file_count != "single" and isinstance(value, list):
            return next((problem for item in value if (problem := file_problem(item, name))), None)
        return file_problem(value, name)
    if isinstance(component, (gr.Slider, gr.Number)):
        return number_problem(value, name, component)
    if isinstance(component, gr.Checkbox):
        return None if isinstance(value, bool) else f"{name} must be true or false, not {kind_of(value)}."
    if isinstance(component, gr.CheckboxGroup):
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return f"{name} must be a list of texts, not {kind_of(value)}."
        offered = choices_of(component)
        unknown = [item for item in value if item not in offered]
        if unknown:
            return f"{name}: {unknown[0][:80]!r} is not one of {', '.join(map(str, offered))}."
        return None
    if isinstance(component, gr.Radio):
        if not isinstance(value, str):
            return f"{name} must be a text, not {kind_of(value)}."
        if value not in choices_of(component):
            return f"{name}: {value[:80]!r} is not one of {', '.join(map(str, choices_of(component)))}."
        return None
    if isinstance(component, gr.Dropdown):  # its choices may change per visitor: the handler checks the value
        if component.multiselect:
            ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
            return None if ok else f"{name} must be a list of texts, not {kind_of(value)}."
        return None if isinstance(value, str) else f"{name} must be a text, not {kind_of(value)}."
    if isinstance(component, gr.Textbox):
        if not isinstance(value, str):
            return f"{name} must be a text, not {kind_of(value)}."
        if len(value) > MAX_FIELD_CHARS:
            return f"{name} is {len(value):,} characters long; a field holds at most {MAX_FIELD_CHARS:,}."
        return None
    return None


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why an event's arguments were refused: the argument's position (None: the list as a whole), its parameter's
    name, and the message."""

    position: int | None
    parameter: str
    message: str

    def detail(self, count: int) -> list[dict]:
        """The refusal as Gradio's validation answer (HTTP 422): one entry per input, the refused one invalid, each
        named; gradio_client raises it as `ValidationError` with the message, the page shows it."""
        if self.position is None:
            return [{"__type__": "validate", "is_valid": False, "parameter_name": self.parameter,
                     "message": self.message}]
        return [{"__type__": "validate", "is_valid": position != self.position, "parameter_name": self.parameter
                 if position == self.position else f"parameter_{position}",
                 "message": self.message if position == self.position else ""} for position in range(count)]


def refused_arguments(block_fn, data, own: dict | None = None) -> Refusal | None:
    """Why an event of `block_fn` cannot run on `data` (the client's values, one per input), or None when it can.
    `own`: the visitor's own copies of components, by id (Gradio's session state: a caption's tokens to tick, a
    model's properties are choices of that visitor's); the page's components otherwise."""
    own = own or {}
    inputs = list(block_fn.inputs)
    names = parameter_names(block_fn.fn) if block_fn.fn is not None else ()
    endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "this event"
    if not isinstance(data, list):
        return Refusal(None, "data", f"{endpoint} takes a list of {len(inputs)} arguments, not {kind_of(data)}.")
    if len(data) != len(inputs):
        expected = ", ".join(argument_name(n, names, c) for n, c in enumerate(inputs)
                             if not isinstance(c, gr.State))
        return Refusal(None, "data", f"{endpoint} takes {len(inputs)} arguments ({expected}); it was sent "
                                     f"{len(data)}.")
    for position, (component, value) in enumerate(zip(inputs, data)):
        component = own.get(component._id, component)
        problem = value_problem(value, argument_name(position, names, component), component)
        if problem:
            name = names[position] if position < len(names) else f"parameter_{position}"
            return Refusal(position, name, f"{endpoint}: {problem}")
    return None
