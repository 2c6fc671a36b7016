"""Teacher sizes this grid does not train itself (torch-free: planning reads it): an ensemble of
trained sizes, `teacher_sizes.<name>: {ensemble: [a, b, ...], combine: ...}` (kdgrid.models.ensemble).
An ensemble decodes and distils like any teacher, with torch (CTranslate2 has no ensembles); it is
no single network, so nothing that copies, rescores with or retrains a teacher's network takes one."""

from __future__ import annotations

KEY = "ensemble"


def ensembles(c: dict) -> dict[str, list[str]]:
    """{ensemble size: its member sizes}."""
    return {name: list(size[KEY]) for name, size in c["teacher_sizes"].items() if KEY in size}


def trained(names, c: dict) -> list[str]:
    """`names` with each ensemble replaced by its members: the sizes whose training they need."""
    groups = ensembles(c)
    return list(dict.fromkeys(m for n in names for m in groups.get(n, [n])))


def _uses(c: dict) -> list[tuple[str, str, str]]:
    """(config key, teacher size, what it does with the network) of every use that needs one network."""
    grid, out = c["grid"], []
    for s in grid["students"]:
        st = c["students"].get(s, {})
        out += [(f"students.{s}.init.from", st.get("init", {}).get("from"), "copy its weights from"),
                (f"students.{s}.kd.teacher", st.get("kd", {}).get("teacher"), "score the student's positions with"),
                (f"students.{s}.decode.rescore", st.get("decode", {}).get("rescore"), "rescore candidates with")]
    for m in grid["methods"]:
        spec = c["methods"].get(m, {})
        if spec.get("kind") == "ban":
            out.append((f"methods.{m}.size", spec.get("size"), "train a Born-Again AT of its size"))
            if spec.get("size") == "teacher":
                out += [(f"methods.{m}.size", t, "train a Born-Again AT of its size (size: teacher)")
                        for t in spec.get("teachers", grid["teachers"])]
    if "filter" in c:
        out.append(("filter.teacher", c["filter"].get("teacher"), "embed sentence pairs with"))
    return [(where, t, why) for where, t, why in out if t]


def problems(c: dict) -> list[str]:
    sizes, groups, out = c["teacher_sizes"], ensembles(c), []
    for name, members in groups.items():
        for i, m in enumerate(members):
            where = f"teacher_sizes.{name}.ensemble[{i}]"
            if m not in sizes:
                out.append(f"{where}: {m!r} is not defined under teacher_sizes (defined: {', '.join(sorted(sizes))})")
            elif m in groups:
                out.append(f"{where}: {m!r} is itself an ensemble; list its members instead")
            elif "experts" in sizes[m]:
                out.append(f"{where}: {m!r} is a mixture-of-experts teacher; an ensemble joins plain Transformer "
                           "teachers (each member decodes with kdgrid.search)")
        repeated = sorted({m for m in members if members.count(m) > 1})
        if repeated:
            out.append(f"teacher_sizes.{name}.ensemble: lists {', '.join(repeated)} more than once; identical "
                       "members decode as one (list each once)")
    for where, t, why in _uses(c):
        if t in groups:
            out.append(f"{where}: {t!r} is an ensemble teacher (teacher_sizes.{t}.ensemble), which decodes but is "
                       f"no single network to {why}; name one of its members ({', '.join(groups[t])})")
    if c["grid"].get("teacher_seeds"):
        for t in c["grid"]["teachers"]:
            if t in groups:
                out.append(f"grid.teacher_seeds: teacher {t!r} is an ensemble; seed replicas are of trained "
                           "teachers (list its members in grid.teachers to replicate them, or drop teacher_seeds)")
    return out
