"""The sources model: states and their legal moves as data, typed errors, one protocol for every kind."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from rtvi.errors import ExitCode
from rtvi.streaming.producer.sources import check_capture
from rtvi.streaming.producer.sources.base import (
    TRANSITIONS, IllegalTransition, Lifecycle, SourceAuthFailed, SourceEnded, SourceError, SourceFrozen,
    SourceNotFound, SourceStalled, SourceState, SourceTimeout, SourceUnreachable, SourceUnsupported, error_reasons,
    frames,
)
from rtvi.streaming.producer.sources.file import VideoFileSource
from rtvi.streaming.producer.sources.folder import ImageFolderSource
from rtvi.streaming.producer.sources.synthetic import SyntheticSource

S = SourceState


def test_every_state_says_where_it_may_go_and_stopped_is_final():
    assert set(TRANSITIONS) == set(SourceState)
    assert TRANSITIONS[S.STOPPED] == frozenset()
    assert all(S.STOPPED in TRANSITIONS[state] for state in SourceState if state != S.STOPPED)
    assert S.CONNECTING not in TRANSITIONS[S.STREAMING], "a lost stream waits out its backoff first"


def test_a_lifecycle_moves_only_along_the_transitions():
    life = Lifecycle()
    for state in (S.STREAMING, S.RECONNECTING, S.CONNECTING, S.RECONNECTING, S.CONNECTING, S.STREAMING):
        assert life.to(state)
    assert not life.to(S.STREAMING)  # already there: nothing changes
    with pytest.raises(IllegalTransition, match="streaming -> connecting"):
        life.to(S.CONNECTING)
    assert life.to(S.STOPPED)
    for state in (S.CONNECTING, S.STREAMING, S.RECONNECTING):
        with pytest.raises(IllegalTransition):
            life.to(state)


@pytest.mark.parametrize(("error", "code", "reason", "retryable"), [
    (SourceNotFound, ExitCode.BAD_INPUT, "not_found", False),
    (SourceAuthFailed, ExitCode.BAD_INPUT, "auth", False),
    (SourceUnsupported, ExitCode.BAD_INPUT, "unsupported", False),
    (SourceUnreachable, ExitCode.UNREACHABLE, "unreachable", True),
    (SourceTimeout, ExitCode.UNREACHABLE, "timeout", True),
    (SourceStalled, ExitCode.UNREACHABLE, "stalled", True),
    (SourceEnded, ExitCode.FAILED, "ended", True),
    (SourceFrozen, ExitCode.FAILED, "frozen", True),
])
def test_each_failure_kind_has_its_exit_code_reason_and_retryability(error, code, reason, retryable):
    assert issubclass(error, SourceError)
    assert (error.exit_code, error.reason, error.retryable) == (code, reason, retryable)
    assert reason in error_reasons()


def test_error_reasons_are_the_metric_labels_of_every_kind():
    assert set(error_reasons()) == {"failed", "not_found", "auth", "unsupported", "unreachable", "timeout",
                                    "stalled", "ended", "frozen"}


def test_synthetic_frames_differ_and_the_protocol_reads_them():
    source = SyntheticSource(64, 48, stream=1)
    source.open()
    images = [image for _, image in zip(range(3), frames(source))]
    assert [i.shape for i in images] == [(48, 64, 3)] * 3
    assert not np.array_equal(images[0], images[1])


def test_an_image_folder_in_name_order_once_or_looped(tmp_path):
    for name, value in (("b.png", 20), ("a.jpg", 10)):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), value, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    once = ImageFolderSource(str(tmp_path))
    once.open()
    assert [int(i.mean()) // 5 for i in frames(once)] == [2, 4]
    looped = ImageFolderSource(str(tmp_path), loop=True)
    looped.open()
    assert len([i for _, i in zip(range(5), frames(looped))]) == 5


def test_a_missing_or_empty_source_is_not_found(tmp_path):
    with pytest.raises(SourceNotFound, match="no images"):
        ImageFolderSource(str(tmp_path)).open()
    with pytest.raises(SourceNotFound, match="does not exist"):
        check_capture(str(tmp_path / "missing.mp4"))
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(SourceUnsupported, match="OpenCV could not read it"):
        check_capture(str(tmp_path / "junk.mp4"))


def test_a_video_file_ends_or_loops(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (32, 24))
    for i in range(4):
        writer.write(np.full((24, 32, 3), i * 40, np.uint8))
    writer.release()
    once = VideoFileSource(str(path))
    once.open()
    assert len(list(frames(once))) == 4
    looped = VideoFileSource(str(path), loop=True)
    looped.open()
    assert len([i for _, i in zip(range(10), frames(looped))]) == 10
