"""Threads and messages: request bodies, content parts, annotations, the wire objects."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from .assistants import ToolResources
from .common import NotNull, OrAbsent, RequestModel, WireModel, WithMetadata

# -- request bodies ----------------------------------------------------------------------------


class AttachmentTool(WireModel):
    type: Literal["code_interpreter", "file_search"]


class Attachment(WireModel):
    file_id: str
    tools: list[AttachmentTool] = Field(default_factory=list)


# Content parts as a client sends them; each becomes the wire part below with only the fields
# OpenAI's schema has. `detail` is one of OpenAI's values or left out.
ImageDetail = Literal["auto", "low", "high"]


class ImageFileParam(RequestModel):
    file_id: str
    detail: NotNull[ImageDetail] = None


class ImageUrlParam(RequestModel):
    url: str
    detail: NotNull[ImageDetail] = None


class TextPart(RequestModel):
    type: Literal["text"] = "text"
    text: str


class ImageFilePart(RequestModel):
    type: Literal["image_file"] = "image_file"
    image_file: ImageFileParam


class ImageUrlPart(RequestModel):
    type: Literal["image_url"] = "image_url"
    image_url: ImageUrlParam


InputPart = Annotated[TextPart | ImageFilePart | ImageUrlPart, Field(discriminator="type")]


class MessageCreate(WithMetadata):
    role: Literal["user", "assistant"]
    content: str | list[InputPart]
    attachments: list[Attachment] | None = None


class MessageUpdate(WithMetadata):
    pass


class ThreadCreate(WithMetadata):
    messages: list[MessageCreate] | None = None
    tool_resources: ToolResources | None = None


class ThreadUpdate(WithMetadata):
    tool_resources: ToolResources | None = None


# -- objects -----------------------------------------------------------------------------------


class ImageFileRef(WireModel):
    file_id: str
    detail: OrAbsent[str] = None


class ImageUrlRef(WireModel):
    url: str
    detail: OrAbsent[str] = None


class Thread(WireModel):
    id: str
    object: Literal["thread"] = "thread"
    created_at: int
    metadata: dict[str, Any] = Field(default_factory=dict)
    tool_resources: ToolResources | None = None


class FilePathRef(WireModel):
    file_id: str


class FilePathAnnotation(WireModel):
    type: Literal["file_path"] = "file_path"
    text: str
    start_index: int
    end_index: int
    file_path: FilePathRef


class Text(WireModel):
    value: str
    annotations: list[FilePathAnnotation] = Field(default_factory=list)


class TextContent(WireModel):
    type: Literal["text"] = "text"
    text: Text


class ImageFileContent(WireModel):
    type: Literal["image_file"] = "image_file"
    image_file: ImageFileRef


class ImageUrlContent(WireModel):
    type: Literal["image_url"] = "image_url"
    image_url: ImageUrlRef


Content = Annotated[TextContent | ImageFileContent | ImageUrlContent, Field(discriminator="type")]


class Message(WireModel):
    id: str
    object: Literal["thread.message"] = "thread.message"
    created_at: int
    thread_id: str
    status: Literal["in_progress", "incomplete", "completed"] = "completed"
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    role: Literal["user", "assistant"]
    content: list[Content] = Field(default_factory=list)
    assistant_id: str | None = None
    run_id: str | None = None
    attachments: list[Attachment] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
