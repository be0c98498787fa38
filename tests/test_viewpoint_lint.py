"""The viewpoint lint on a labelled table: whose left, and camera moves versus object moves."""

from __future__ import annotations

import pytest

from editcaption.checks.viewpoint import ViewpointIssue, lint_viewpoint, reference_frames

# (instruction, the issue kinds the lint should report, in text order)
LABELLED: list[tuple[str, list[str]]] = [
    # a subject with sides of its own and no frame
    ("Move the man to the left.", ["missing_frame"]),
    ("Raise the left arm of the woman.", ["missing_frame"]),
    ("Turn the dog's head to the right.", ["missing_frame"]),
    ("She turns left.", ["missing_frame"]),
    ("Put the ball in front of the dog.", ["missing_frame"]),
    ("Park a bike behind the car.", ["missing_frame"]),
    ("Move the chair to the back.", ["missing_frame"]),
    ("Place a lamp left of the sofa.", ["missing_frame"]),
    ("Two horses walk to the right.", ["missing_frame"]),
    # a frame is named, or nothing has sides of its own
    ("Move the man to the viewer's left.", []),
    ("Raise the man's left arm.", []),
    ("Turn the dog's head to its right.", []),
    ("Move the car to the left side of the image.", []),
    ("Put the ball in front of the dog, closer to the camera.", []),
    ("The man on the left waves.", []),
    ("Move the cup to the left.", []),
    ("Put the ball in front of the cup.", []),
    ("The dog is left behind and the background is left unchanged.", []),
    ("From the cat's own perspective, it looks left.", []),
    ("Have the girl step to her own right.", []),
    # camera words for object motion
    ("Pan the cup to the left.", ["camera_as_object"]),
    ("Zoom the dog closer.", ["camera_as_object"]),
    ("Dolly the chair toward the window.", ["camera_as_object"]),
    ("Pan left.", []),
    ("Pan the camera to the right.", []),
    ("Zoom in on the cup.", []),
    ("The camera pans the room from left to right.", []),
    ("Place the frying pan the chef holds on the stove.", []),
    # object motion for the whole picture
    ("Move the whole scene left.", ["object_as_camera"]),
    ("Shift everything to the right.", ["object_as_camera"]),
    ("Rotate the entire image 90 degrees clockwise.", ["object_as_camera"]),
    ("Turn the whole image into a watercolour painting.", []),
    ("Move the cup to the right.", []),
    # several in one instruction, by sentence
    ("Move the man to the left. Pan the vase to the right.", ["missing_frame", "camera_as_object"]),
    ("Shift the entire frame left; the woman raises her right hand.", ["object_as_camera"]),
]


@pytest.mark.parametrize(("instruction", "kinds"), LABELLED)
def test_lint(instruction: str, kinds: list[str]) -> None:
    assert [issue.kind for issue in lint_viewpoint(instruction)] == kinds


def test_table_is_large_enough() -> None:
    assert len(LABELLED) >= 20
    assert {k for _, kinds in LABELLED for k in kinds} == {
        "missing_frame",
        "camera_as_object",
        "object_as_camera",
    }


def test_issue_points_at_the_word_and_says_what_to_do() -> None:
    text = "Now move the man to the left."
    (issue,) = lint_viewpoint(text)
    assert isinstance(issue, ViewpointIssue)
    assert text[slice(*issue.span)] == "left"
    assert "man" in issue.message and "viewer" in issue.message

    (camera,) = lint_viewpoint("Pan the red cup to the left.")
    assert camera.span == (0, 3) and "the red cup" in camera.message

    (scene,) = lint_viewpoint("Move the whole scene left.")
    assert "Move the whole scene" in scene.message and "pan the camera" in scene.message


def test_one_missing_frame_per_sentence() -> None:
    assert [i.kind for i in lint_viewpoint("Move the man from left to right.")] == ["missing_frame"]


def test_reference_frames() -> None:
    assert reference_frames("to the viewer's left") == {"viewer"}
    assert reference_frames("raise his own right hand") == {"subject"}
    assert reference_frames("the dog's left ear, on the left of the image") == {"subject", "viewer"}
    assert reference_frames("move it left") == set()
