#!/usr/bin/env python3
"""Prints the public API of a crate from its rustdoc JSON, one sorted line per
item: what is reachable from the crate root (modules, re-exports followed),
with signatures, struct fields, enum variants, inherent methods and the
traits implemented (not blanket or auto impls). `scripts/public-api.sh`
compares it with the committed snapshot.

Usage: public_api.py target/doc/<crate>.json
"""
import json
import sys


def main(path):
    doc = json.load(open(path))
    index = doc["index"]
    paths = doc["paths"]
    lines = set()

    def item(i):
        return index.get(str(i))

    def name_of(i):
        if str(i) in paths:
            return "::".join(paths[str(i)]["path"][1:]) or paths[str(i)]["path"][-1]
        it = item(i)
        return it["name"] if it else "?"

    def args(a):
        if not a:
            return ""
        if "angle_bracketed" in a:
            parts = []
            for x in a["angle_bracketed"]["args"]:
                if "type" in x:
                    parts.append(ty(x["type"]))
                elif "lifetime" in x:
                    parts.append(x["lifetime"])
                elif "const" in x:
                    parts.append(str(x["const"].get("expr", "_")))
            for c in a["angle_bracketed"].get("constraints", []):
                binding = c.get("binding", {})
                if "equality" in binding:
                    parts.append(f"{c['name']} = {ty(binding['equality']['type'])}")
                else:
                    parts.append(f"{c['name']}: …")
            return f"<{', '.join(parts)}>" if parts else ""
        if "parenthesized" in a:
            p = a["parenthesized"]
            out = f"({', '.join(ty(t) for t in p['inputs'])})"
            return out + (f" -> {ty(p['output'])}" if p.get("output") else "")
        return ""

    def bound(b):
        if "trait_bound" in b:
            t = b["trait_bound"]["trait"]
            return t["path"] + args(t.get("args"))
        if "outlives" in b:
            return b["outlives"]
        return "…"

    def ty(t):
        if t is None:
            return "()"
        (kind, v), = t.items()
        if kind == "resolved_path":
            return v["path"] + args(v.get("args"))
        if kind == "primitive":
            return v
        if kind == "generic":
            return v
        if kind == "borrowed_ref":
            lt = (v["lifetime"] + " ") if v.get("lifetime") else ""
            return f"&{lt}{'mut ' if v['is_mutable'] else ''}{ty(v['type'])}"
        if kind == "tuple":
            return f"({', '.join(ty(x) for x in v)})"
        if kind == "slice":
            return f"[{ty(v)}]"
        if kind == "array":
            return f"[{ty(v['type'])}; {v['len']}]"
        if kind == "impl_trait":
            return "impl " + " + ".join(bound(b) for b in v)
        if kind == "dyn_trait":
            return "dyn " + " + ".join(t["trait"]["path"] + args(t["trait"].get("args")) for t in v["traits"])
        if kind == "qualified_path":
            return f"<{ty(v['self_type'])}>::{v['name']}"
        if kind == "raw_pointer":
            return f"*{'mut' if v['is_mutable'] else 'const'} {ty(v['type'])}"
        if kind == "function_pointer":
            return "fn(…)"
        return kind

    def generics(g):
        params = []
        for p in g.get("params", []):
            if p["kind"].get("type", {}).get("is_synthetic"):
                continue
            if "lifetime" in p["kind"]:
                params.append(p["name"])
            elif "type" in p["kind"]:
                bounds = p["kind"]["type"]["bounds"]
                params.append(p["name"] + (": " + " + ".join(bound(b) for b in bounds) if bounds else ""))
            elif "const" in p["kind"]:
                params.append(f"const {p['name']}: {ty(p['kind']['const']['type'])}")
        return f"<{', '.join(params)}>" if params else ""

    def signature(name, f):
        header = f["header"]
        prefix = ("const " if header["is_const"] else "") + ("async " if header["is_async"] else "") + ("unsafe " if header["is_unsafe"] else "")
        def param(n, t):
            if n == "self":
                rendered = ty(t)
                if rendered in ("Self", "&Self", "&mut Self"):
                    return rendered.replace("Self", "self")
            return f"{n}: {ty(t)}"

        inputs = ", ".join(param(n, t) for n, t in f["sig"]["inputs"])
        out = f["sig"].get("output")
        return f"{prefix}fn {name}{generics(f['generics'])}({inputs})" + (f" -> {ty(out)}" if out else "")

    def attrs(it):
        return "#[non_exhaustive] " if any("non_exhaustive" in str(a) for a in it.get("attrs", [])) else ""

    def impls(prefix, ids):
        for i in ids:
            imp = item(i)
            if not imp:
                continue
            imp = imp["inner"]["impl"]
            if imp.get("is_synthetic") or imp.get("blanket_impl"):
                continue
            if imp["trait"] is None:
                for m in imp["items"]:
                    mi = item(m)
                    if not mi or mi["visibility"] != "public":
                        continue
                    if "function" in mi["inner"]:
                        lines.add(f"{prefix}::{mi['name']}: {signature(mi['name'], mi['inner']['function'])}")
                    elif "assoc_const" in mi["inner"]:
                        lines.add(f"{prefix}::{mi['name']}: const {ty(mi['inner']['assoc_const']['type'])}")
            else:
                trait = imp["trait"]["path"] + args(imp["trait"].get("args"))
                if trait != "StructuralPartialEq":
                    lines.add(f"{prefix}: impl {trait}")

    seen = set()

    def walk(i, prefix):
        it = item(i)
        if it is None:
            return
        inner = it["inner"]
        (kind, v), = inner.items()
        if kind == "use":
            if v["id"] is None:
                lines.add(f"{prefix}{v['name']}: use {v['source']}")
                return
            target = item(v["id"])
            if target is None:
                lines.add(f"{prefix}{v['name']}: use {v['source']} (external)")
                return
            if v["is_glob"]:
                for j in target["inner"].get("module", {}).get("items", []):
                    walk(j, prefix)
                return
            walk_named(v["id"], prefix, v["name"])
            return
        walk_named(i, prefix, it["name"])

    def walk_named(i, prefix, name):
        it = item(i)
        (kind, v), = it["inner"].items()
        path = prefix + name
        key = (path, i)
        if key in seen:
            return
        seen.add(key)
        if kind == "module":
            lines.add(f"{path}: mod")
            for j in v["items"]:
                child = item(j)
                if child and child["visibility"] == "public":
                    walk(j, path + "::")
        elif kind == "struct":
            lines.add(f"{path}: {attrs(it)}struct{generics(v['generics'])}")
            k = v["kind"]
            if "plain" in k:
                for f in k["plain"]["fields"]:
                    fi = item(f)
                    if fi and fi["visibility"] == "public":
                        lines.add(f"{path}.{fi['name']}: {ty(fi['inner']['struct_field'])}")
                if k["plain"].get("has_stripped_fields"):
                    lines.add(f"{path}: has private fields")
            elif "tuple" in k:
                fields = [ty(item(f)["inner"]["struct_field"]) if f is not None and item(f)["visibility"] == "public" else "_" for f in k["tuple"]]
                lines.add(f"{path}: tuple ({', '.join(fields)})")
            impls(path, v["impls"])
        elif kind == "enum":
            lines.add(f"{path}: {attrs(it)}enum{generics(v['generics'])}")
            for var in v["variants"]:
                vi = item(var)
                vk = vi["inner"]["variant"]["kind"]
                if vk == "plain":
                    lines.add(f"{path}::{vi['name']}: variant")
                elif "tuple" in vk:
                    lines.add(f"{path}::{vi['name']}: variant ({', '.join(ty(item(f)['inner']['struct_field']) for f in vk['tuple'] if f is not None)})")
                else:
                    fields = [f"{item(f)['name']}: {ty(item(f)['inner']['struct_field'])}" for f in vk["struct"]["fields"]]
                    lines.add(f"{path}::{vi['name']}: variant {{ {', '.join(fields)} }}")
            impls(path, v["impls"])
        elif kind == "function":
            lines.add(f"{path}: {signature(name, v)}")
        elif kind == "trait":
            lines.add(f"{path}: trait{generics(v['generics'])}")
            for m in v["items"]:
                mi = item(m)
                if mi and "function" in mi["inner"]:
                    lines.add(f"{path}::{mi['name']}: {signature(mi['name'], mi['inner']['function'])}")
        elif kind == "constant":
            lines.add(f"{path}: const {ty(v['type'])} = {v['const'].get('expr', '')}")
        elif kind == "static":
            lines.add(f"{path}: static {ty(v['type'])}")
        elif kind == "type_alias":
            lines.add(f"{path}: type = {ty(v['type'])}")
        elif kind == "macro":
            lines.add(f"{path}: macro")
        else:
            lines.add(f"{path}: {kind}")

    root = item(doc["root"])
    for i in root["inner"]["module"]["items"]:
        child = item(i)
        if child and child["visibility"] == "public":
            walk(i, "")
    for line in sorted(lines):
        print(line)


if __name__ == "__main__":
    main(sys.argv[1])
