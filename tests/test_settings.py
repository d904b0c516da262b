"""Profiles: the YAML is the only source of settings; validation names the file and the key;
`base` inheritance; overrides; cache keys."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from action100m_hf.build.settings import PROFILE_DIR, load_profile, section_classes, stage_keys
from action100m_hf.build.stages import STAGE_NAMES
from action100m_hf.errors import ProfileError


def test_profiles_load_with_overrides():
    paper = load_profile("paper")
    assert paper["segment"].model == "facebook/vjepa2-vitg-fpc64-384"
    assert (paper["caption"].num_frames, paper["caption"].frame_size, paper["caption"].max_new_tokens) == (32, 320, 1024)
    assert (paper["aggregate"].model, paper["aggregate"].rounds) == ("openai/gpt-oss-120b", 3)
    tiny = load_profile("tiny", ["caption.num_frames=2", "segment.min_leaf=1",
                                 "aggregate.backends.transformers.max_batch_size=3"])  # fmt: skip
    assert tiny["caption"].num_frames == 2
    assert tiny["segment"].min_leaf == 1.0 and isinstance(tiny["segment"].min_leaf, float)
    assert tiny["aggregate"].backends["transformers"]["max_batch_size"] == 3
    assert tiny["aggregate"].backends["transformers"]["max_batch_tokens"] == 32768  # the rest kept
    assert tiny.overrides == ("caption.num_frames=2", "segment.min_leaf=1",
                              "aggregate.backends.transformers.max_batch_size=3")  # fmt: skip


def test_the_settings_classes_hold_no_default_values():
    for name, cls in section_classes().items():
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f"{name}.{f.name}"


def test_sections_are_the_stages_in_order_then_run():
    assert list(section_classes()) == [*STAGE_NAMES, "run"] == ["segment", "caption", "aggregate", "run"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("caption.frames=4", "unknown key(s) caption.frames"),
        ("caption.num_frames=four", "caption.num_frames = 'four' has type str"),
        ("caption.num_frames=0", "caption.num_frames = 0; must be at least 1"),
        ("segment.encoder=resnet", "segment.encoder = 'resnet'; expected one of vjepa2, pixel"),
        ("aggregate.backend=llamacpp", "aggregate.backend = 'llamacpp'; expected one of vllm, openai, transformers"),
        ("stage9.x=1", "unknown section 'stage9'; sections are segment, caption, aggregate, run"),
        ("captionnum_frames", "expected SECTION.KEY=VALUE"),
        ("segment.model=null", "section 'segment': encoder vjepa2 needs a model"),
    ],
)
def test_profile_errors_name_the_key(override, message):
    with pytest.raises(ProfileError) as info:
        load_profile("tiny", [override])
    assert message in str(info.value)


def test_profile_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ndescription: x\nbase: tiny\ncaption:\n  num_frame: 3\n")
    with pytest.raises(ProfileError, match=r"mine\.yaml: unknown key\(s\) caption\.num_frame"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no profile 'nope'"):
        load_profile("nope")
    partial = tmp_path / "partial.yaml"
    partial.write_text("name: partial\ndescription: x\nsegment: {encoder: pixel}\n")
    with pytest.raises(ProfileError, match=r"partial\.yaml: missing section\(s\) caption, aggregate, run"):
        load_profile(partial)
    lacking = tmp_path / "lacking.yaml"
    tiny = yaml.safe_load((PROFILE_DIR / "tiny.yaml").read_text())
    del tiny["caption"]["frame_size"]
    lacking.write_text(yaml.safe_dump(tiny))
    with pytest.raises(ProfileError, match=r"lacking\.yaml: section 'caption' lacks caption\.frame_size"):
        load_profile(lacking)


def test_a_profile_extends_its_base(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\ndescription: the tiny profile, faster\nbase: tiny\n"
                    "caption: {num_frames: 2}\naggregate: {backends: {transformers: {max_batch_size: 4}}}\n")  # fmt: skip
    profile, tiny = load_profile(mine), load_profile("tiny")
    assert profile.name == "mine" and profile["caption"].num_frames == 2
    assert profile["aggregate"].backends["transformers"] == {**tiny["aggregate"].backends["transformers"], "max_batch_size": 4}
    assert profile["segment"] == tiny["segment"]
    loop = tmp_path / "loop.yaml"
    loop.write_text("name: loop\ndescription: x\nbase: loop.yaml\n")
    with pytest.raises(ProfileError, match=r"loop\.yaml: `base` chain loops back to itself"):
        load_profile(loop)


def test_the_resolved_profile_round_trips_through_yaml(tmp_path):
    profile = load_profile("tiny", ["caption.num_frames=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(profile.to_yaml())
    assert load_profile(path).sections == profile.sections


def test_stage_keys_chain_and_ignore_batch_sizes_and_devices():
    base = stage_keys(load_profile("tiny"))
    new_llm = stage_keys(load_profile("tiny", ["aggregate.max_string_length=8"]))
    new_encoder = stage_keys(load_profile("tiny", ["segment.encoder=pixel"]))
    same = stage_keys(load_profile("tiny", ["caption.batch_size=2", "segment.device=cpu", "aggregate.batch_videos=9",
                                            "aggregate.backends.transformers.max_batch_size=1"]))  # fmt: skip
    assert new_llm["segment"] == base["segment"] and new_llm["caption"] == base["caption"]
    assert new_llm["aggregate"] != base["aggregate"]
    assert all(new_encoder[s] != base[s] for s in base)
    assert same == base
    # A build that starts from tree rows chains from its first stage only.
    later = stage_keys(load_profile("tiny", ["segment.encoder=pixel"]), ["caption", "aggregate"])
    assert later == stage_keys(load_profile("tiny"), ["caption", "aggregate"])
