"""Copy-weight initialization from a teacher (kdgrid.kd.init_copy) and the --wrap settings."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import ROOT, model_config, toy_pairs

from kdgrid.batching import collate
from kdgrid.errors import KdgridError
from kdgrid.kd import copy_from_teacher, defaults, layer_map, parse_wrap, prepare
from kdgrid.kd.specs import KD_LOSSES, LAYER_MAPS
from kdgrid.models import build

PAIRS = toy_pairs(4, seed=2)


def model(kind, seed, layers=2, d=16, **extra):
    torch.manual_seed(seed)
    cfg = model_config(kind, d=d, layers=layers, **extra)
    if kind == "moe":
        del cfg["mask"]  # an AT model: no <mask> id
    return build(kind, cfg).eval()


def batch():
    return collate([s for s, _ in PAIRS], [t for _, t in PAIRS], 0, 2, 3)


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("mode", LAYER_MAPS)
def test_a_student_as_deep_as_its_teacher_copies_every_layer_and_reproduces_it_exactly(mode):
    teacher, student = model("transformer", 1), model("transformer", 2)
    b = batch()
    record = copy_from_teacher(student, teacher, mode, source="t")
    assert record["kept"] == [] and record["map"] == {"encoder": [0, 1], "decoder": [0, 1]}
    assert record["copied"] == sorted(student.state_dict()) and record["from"] == "t"
    with torch.no_grad():
        logits = [m.decode(b["tgt_in"], *m.encode(b["src"])) for m in (teacher, student)]
    assert torch.equal(*logits)
    assert teacher.generate(b["src"], "greedy") == student.generate(b["src"], "greedy")


def test_layer_maps():
    assert layer_map(6, 3, "every_other") == [0, 2, 4]
    assert layer_map(6, 4, "every_other") == [0, 1, 3, 4]
    assert layer_map(6, 3, "first") == [0, 1, 2] and layer_map(6, 3, "last") == [3, 4, 5]
    # even: round(i * (T-1) / (S-1)), halves up; both ends kept; one layer: the last
    assert layer_map(6, 3, "even") == [0, 3, 5] and layer_map(6, 4, "even") == [0, 2, 3, 5]
    assert layer_map(6, 5, "even") == [0, 1, 3, 4, 5] and layer_map(12, 4, "even") == [0, 4, 7, 11]
    assert layer_map(4, 2, "even") == [0, 3] and layer_map(6, 1, "even") == [5]
    for t in range(1, 9):
        for s in range(2, t + 1):
            got = layer_map(t, s, "even")
            assert got[0] == 0 and got[-1] == t - 1 and got == sorted(set(got)), (t, s, got)
    assert all(layer_map(3, 3, mode) == [0, 1, 2] for mode in LAYER_MAPS)


def test_the_workflow_and_readme_offer_the_cores_layer_maps_and_losses():
    """The schema's enums are kdgrid.kd.specs' tuples; defaults.yaml and the README name every map."""
    schema = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())
    student = schema["properties"]["students"]["additionalProperties"]["properties"]
    assert tuple(student["init"]["properties"]["layers"]["enum"]) == LAYER_MAPS
    assert tuple(student["kd"]["properties"]["loss"]["enum"]) == KD_LOSSES
    defaults_yaml = (ROOT / "workflow" / "defaults.yaml").read_text()
    init_comment = defaults_yaml[defaults_yaml.index("#   init: {from:"): defaults_yaml.index("#   kd: {teacher:")]
    assert " | ".join(LAYER_MAPS) in " ".join(init_comment.replace("#", " ").split())
    assert "# layers: " + " | ".join(LAYER_MAPS) in (ROOT / "README.md").read_text()


@pytest.mark.parametrize("mode,expected", [("every_other", [0, 2]), ("first", [0, 1]), ("last", [2, 3]),
                                           ("even", [0, 3])])
def test_the_layer_map_copies_the_right_teacher_layers(mode, expected):
    teacher, student = model("transformer", 1, layers=4), model("transformer", 2, layers=2)
    record = copy_from_teacher(student, teacher, mode)
    assert record["map"] == {"encoder": expected, "decoder": expected}
    for side in ("encoder", "decoder"):
        s_stack, t_stack = getattr(student, side), getattr(teacher, side)
        for i, j in enumerate(expected):
            assert same(s_stack.layers[i], t_stack.layers[j]), (side, i, j)
            assert not same(s_stack.layers[i], t_stack.layers[j ^ 1]), "distinct layers must differ"
        assert same(s_stack.norm, t_stack.norm)
    assert torch.equal(student.embed.table.weight, teacher.embed.table.weight)


def test_an_nat_student_gets_the_body_and_keeps_its_length_head():
    teacher, student = model("transformer", 1), model("nat", 2)
    length_before = {k: v.clone() for k, v in student.length.state_dict().items()}
    record = copy_from_teacher(student, teacher, "first")
    assert record["kept"] == ["length.proj.bias", "length.proj.weight"]
    assert same(student.encoder, teacher.encoder) and same(student.decoder, teacher.decoder)
    assert torch.equal(student.embed.table.weight, teacher.embed.table.weight)
    assert all(torch.equal(v, length_before[k]) for k, v in student.length.state_dict().items())


def test_an_moe_teacher_gives_its_shared_body_but_not_its_experts():
    teacher, student = model("moe", 1, experts=2), model("transformer", 2)
    record = copy_from_teacher(student, teacher, "every_other")
    assert record["kept"] == []
    assert not any(k.startswith(("experts", "gate")) for k in record["copied"])
    assert torch.equal(student.embed.table.weight, teacher.embed.table.weight)
    assert same(student.encoder, teacher.encoder) and same(student.decoder, teacher.decoder)


@pytest.mark.parametrize("student_over,both", [
    ({"d": 32}, ("d_model is 32", "teacher's is 16")),
    ({"heads": 2}, ("heads is 2", "teacher's is 4")),
    ({"ffn": 48}, ("ffn is 48", "teacher's is 32")),
    ({"vocab_size": 44}, ("vocab_size is 44", "teacher's is 40")),
    ({"layers": 3}, ("3 encoder layers", "only 2")),
])
def test_a_mismatch_raises_naming_both_sizes_and_the_fix(student_over, both):
    teacher = model("transformer", 1)
    over = dict(student_over)
    student = model("transformer", 2, layers=over.pop("layers", 2), d=over.pop("d", 16), **over)
    with pytest.raises(KdgridError) as e:
        copy_from_teacher(student, teacher, "every_other")
    assert all(part in str(e.value) for part in both), str(e.value)
    assert "drop students.<name>.init" in str(e.value)


def test_wrap_settings_defaults_and_errors(tmp_path):
    assert defaults() == {"init": {"from": None, "layers": "every_other"},
                          "kd": {"teacher": None, "loss": "fkl", "alpha": 0.5, "temperature": 1.0,
                                 "mix_weight": 0.5, "online": None},
                          "online": {"rank": 8, "lr": 0.001, "lambda": 1.0},
                          "glance": {"p_start": 0.5, "p_end": 0.3, "anneal_updates": 0}}
    init, kd, glance = parse_wrap({"init": {"from": "big"}, "kd": {"loss": "mix", "online": {"lambda": 0.5}}})
    assert glance is None and parse_wrap({"glance": {"p_end": 0.1}})[2].p_end == 0.1
    assert init.teacher == "big" and init.layers == "every_other"
    assert kd.loss == "mix" and kd.online.weight == 0.5 and kd.online.rank == 8
    for bad, named in (({"kd": {"alfa": 1}}, "kd.alfa"), ({"kd": {"online": {"rnk": 2}}}, "kd.online.rnk"),
                       ({"init": {"layers": "odd"}}, "init.layers"), ({"kd": {"loss": "js"}}, "kd.loss"),
                       ({"kd": {"alpha": 2}}, "kd.alpha"), ({"extra": {}}, "extra"),
                       ({"glance": {"p_start": 2}}, "glance.p_start"), ({"glance": {"p": 1}}, "glance.p")):
        with pytest.raises(KdgridError, match=named.replace(".", r"\.")):
            parse_wrap(bad)
    student = model("transformer", 2)
    with pytest.raises(KdgridError, match="--init-teacher"):
        prepare(student, {"init": {}}, None, None, "cpu")
    with pytest.raises(KdgridError, match="--kd-teacher"):
        prepare(student, {"kd": {}}, None, None, "cpu")
    with pytest.raises(KdgridError, match="--kd-teacher .* no kd part"):
        prepare(student, {"init": {}}, "t.pt", "t.pt", "cpu")
    assert prepare(student, None, None, None, "cpu") == (student, {})


@pytest.mark.parametrize("kind", ["inat", "inst", "levt", "flowseq"])
def test_every_kind_on_the_transformer_body_takes_the_copy(kind):
    """The workflow allows init for every EncoderDecoder kind: the body is copied, the rest kept."""
    teacher, student = model("transformer", 1), model(kind, 2, layers=1)
    record = copy_from_teacher(student, teacher, "last")
    assert record["map"] == {"encoder": [1], "decoder": [1]}
    assert same(student.encoder.layers[0], teacher.encoder.layers[1])
    assert same(student.decoder.layers[0], teacher.decoder.layers[1])
    assert same(student.encoder.norm, teacher.encoder.norm) and same(student.decoder.norm, teacher.decoder.norm)
    assert torch.equal(student.embed.table.weight, teacher.embed.table.weight)
    assert record["kept"] and not any(k.startswith(("encoder.", "decoder.", "embed.")) for k in record["kept"])
