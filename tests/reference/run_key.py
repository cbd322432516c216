"""Run keys of grids/default.toml, derived by hand from the documented canonical form.

A run key is the first 16 hex digits of the SHA-256 of the spec's canonical JSON: every
field in declaration order, every default written out, no spaces, floats in serde_json's
shortest round-trip form (1e-8, 0.0012, 0.0). The JSON below is written out from the
documented fields and defaults (docs/specs.md), not produced by the Rust code, so the
golden keys in crates/ap-runs/src/spec.rs check the code against it.

    python3 tests/reference/run_key.py
"""
import hashlib

TEMPLATE = (
    '{"model":"lenet300-100","dataset":"mnist","seed":%(seed)d,'
    '"train":{"optimizer":{"kind":"adam","lr":0.0012,"beta1":0.9,"beta2":0.999,"eps":1e-8,"weight_decay":0.0},'
    '"schedule":{"kind":"constant"},"batch_size":60,"iterations":5000},'
    '"prune":{"method":"imp","rounds":16,"rate":0.2,"criterion":"magnitude",'
    '"allocation":{"per_layer":{"overrides":{"fc3.weight":0.5}}},"rewind_iteration":0},'
    '"ap":{"enabled":%(ap)s,"rate":0.02,"share":0.1,"survivor_share":0.025,"in_drop_and_grow":false,'
    '"options":{"sign":"negative","score":"movement"},"from_event":0,"until_event":null},'
    '"init":"pytorch","eval_batch_size":1000}'
)

for ap in ("false", "true"):
    for seed in (0, 1, 2):
        key = hashlib.sha256((TEMPLATE % {"seed": seed, "ap": ap}).encode()).hexdigest()[:16]
        print(f"imp{'+ap' if ap == 'true' else ''}-lenet300-100-mnist-s{seed}-{key}")
