"""Request and response bodies of the HTTP API, as pydantic models (they are also the OpenAPI schemas)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LANGUAGE_PATTERN = r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}$"


class InstructionOptions(BaseModel):
    """Style options of /v1/instructions (JSON fields, or form fields next to the two files)."""

    model_config = ConfigDict(extra="forbid")

    num_candidates: int = Field(1, ge=1, description="Instructions to write (at most the server's limit).")
    length: Literal["short", "medium", "long"] = Field("medium", description="How long each instruction is.")
    language: str = Field("en", pattern=LANGUAGE_PATTERN, description="BCP 47 code of the output language.")
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        description="Sampling temperature; default 0 for one candidate, the server's for more.",
    )
    score: bool = Field(False, description="Also score each candidate with EditScore.")


class InstructionsJSON(InstructionOptions):
    """The JSON form: each image as base64 (or a data URL), or as an http(s) URL when the server allows."""

    source: str | None = Field(None, description="Source image: base64 or `data:image/...;base64,...`.")
    target: str | None = Field(None, description="Target (edited) image: base64 or data URL.")
    source_url: str | None = Field(None, description="Source image URL (only if the server enables URLs).")
    target_url: str | None = Field(None, description="Target image URL (only if the server enables URLs).")

    @model_validator(mode="after")
    def _one_of_each(self) -> InstructionsJSON:
        for role in ("source", "target"):
            given = [name for name in (role, f"{role}_url") if getattr(self, name) is not None]
            if len(given) != 1:
                raise ValueError(f"give exactly one of `{role}` and `{role}_url` (got {len(given)})")
        return self


MULTIPART_SCHEMA = {
    "type": "object",
    "required": ["source", "target"],
    "properties": {
        "source": {"type": "string", "format": "binary", "description": "Source image file."},
        "target": {"type": "string", "format": "binary", "description": "Target (edited) image file."},
        **{
            name: schema
            for name, schema in InstructionOptions.model_json_schema()["properties"].items()
            if name != "title"
        },
    },
}


class ScoreOut(BaseModel):
    """EditScore of one candidate on 0-10; None where the scorer's replies did not parse."""

    semantic_consistency: float | None
    perceptual_quality: float | None
    overall: float | None
    num_pass: int
    num_parsed: int


class CandidateOut(BaseModel):
    candidate_id: str
    instruction: str | None = Field(description="The parsed instruction; None if the reply had none.")
    raw_text: str = Field(description="The model's reply, verbatim.")
    parsed: bool
    error: str | None = None
    score: ScoreOut | None = None


class Timings(BaseModel):
    decode_s: float = Field(description="Reading and checking the images.")
    caption_s: float = Field(description="Waiting for the captioner (queue + batch + generation).")
    score_s: float | None = Field(description="Waiting for the scorer, when `score` was asked.")
    total_s: float


class InstructionsResponse(BaseModel):
    request_id: str
    model: str
    prompt_version: str
    instruction: str | None = Field(
        description="The best instruction: highest EditScore overall when scored, else the first parsed."
    )
    candidates: list[CandidateOut]
    length: str
    language: str
    timings: Timings


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str = Field(description="A `data:image/...;base64,` URL, or http(s) when the server allows.")
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None

    @model_validator(mode="after")
    def _filled(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs `text`")
        if self.type == "image_url" and self.image_url is None:
            raise ValueError("an image_url part needs `image_url`")
        return self


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completion request this server answers (no streaming, no tools)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: Literal["stop", "length"]


class ChatUsage(BaseModel):
    completion_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "editcaption"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
