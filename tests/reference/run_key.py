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

# Every method kind, both optimizers, every schedule, warm-up, augmentation, the
# allocations, AP's options and window, and RigL's filled-in dense layer. Each JSON is
# written out by hand from the spec's fields in declaration order (docs/specs.md,
# "Run key"); the TOML the Rust test parses for each case is beside it there
# (crates/ap-runs/src/spec.rs, `golden_run_keys_of_every_method_kind`).
AP_OFF = ('"ap":{"enabled":false,"rate":0.02,"share":0.1,"survivor_share":0.025,'
          '"in_drop_and_grow":false,"options":{"sign":"negative","score":"movement"},'
          '"from_event":0,"until_event":null}')
AP_ON = AP_OFF.replace('"enabled":false', '"enabled":true')
CASES = [
    ("lrr-random+ap-conv2-fashion-mnist-s1",
     '{"model":"conv2","dataset":"fashion-mnist","seed":1,'
     '"train":{"optimizer":{"kind":"sgd","lr":0.1,"momentum":0.9,"weight_decay":0.0005,"nesterov":false},'
     '"schedule":{"kind":"step","milestones":[100,200],"gamma":0.1},"batch_size":128,"iterations":300,'
     '"warmup_iterations":50},'
     '"prune":{"method":"lrr","rounds":3,"rate":0.2,"criterion":"random","allocation":"uniform"},'
     + AP_ON + ',"init":"pytorch","eval_batch_size":1000}'),
    ("imp-rewind-lamp-resnet20-fashion-mnist-s0",
     '{"model":"resnet20","dataset":"fashion-mnist","seed":0,'
     '"train":{"optimizer":{"kind":"sgd","lr":0.1,"momentum":0.9,"weight_decay":0.0001,"nesterov":true},'
     '"schedule":{"kind":"cosine"},"batch_size":128,"iterations":1000,'
     '"augment":{"crop_padding":4,"horizontal_flip":true}},'
     '"prune":{"method":"imp","rounds":5,"rate":0.2,"criterion":"lamp","allocation":"global","rewind_iteration":200},'
     + AP_OFF + ',"init":"openlth","eval_batch_size":500}'),
    ("pai-snip+ap-lenet300-100-mnist-s2",
     '{"model":"lenet300-100","dataset":"mnist","seed":2,'
     '"train":{"optimizer":{"kind":"adam","lr":0.0012,"beta1":0.9,"beta2":0.999,"eps":1e-8,"weight_decay":0.0},'
     '"schedule":{"kind":"constant"},"batch_size":60,"iterations":2000},'
     '"prune":{"method":"one_shot","density":0.05,"criterion":"snip","at_init":true,"fine_tune_iterations":null,'
     '"allocation":"global","synflow_iterations":100,"snip_batches":1},'
     + AP_ON + ',"init":"pytorch","eval_batch_size":1000}'),
    ("one-shot-lamp-lenet300-100-mnist-s0",
     '{"model":"lenet300-100","dataset":"mnist","seed":0,'
     '"train":{"optimizer":{"kind":"adam","lr":0.001,"beta1":0.8,"beta2":0.99,"eps":1e-8,"weight_decay":0.0},'
     '"schedule":{"kind":"constant"},"batch_size":60,"iterations":2000},'
     '"prune":{"method":"one_shot","density":0.1,"criterion":"lamp","at_init":false,"fine_tune_iterations":500,'
     '"allocation":{"per_layer":{"overrides":{"fc3.weight":0.5}}},"synflow_iterations":100,"snip_batches":4},'
     + AP_OFF + ',"init":"xavier_normal","eval_batch_size":1000}'),
    ("gmp+ap-lenet300-100-mnist-s0",
     '{"model":"lenet300-100","dataset":"mnist","seed":0,'
     '"train":{"optimizer":{"kind":"adam","lr":0.0012,"beta1":0.9,"beta2":0.999,"eps":1e-8,"weight_decay":0.0001},'
     '"schedule":{"kind":"cosine"},"batch_size":60,"iterations":6000},'
     '"prune":{"method":"gmp","final_density":0.03125,"begin":500,"end":4500,"every":100,"allocation":"global"},'
     + AP_ON + ',"init":"pytorch","eval_batch_size":1000}'),
    ("granet+ap-conv2-fashion-mnist-s0",
     '{"model":"conv2","dataset":"fashion-mnist","seed":0,'
     '"train":{"optimizer":{"kind":"sgd","lr":0.05,"momentum":0.0,"weight_decay":0.0,"nesterov":false},'
     '"schedule":{"kind":"constant"},"batch_size":64,"iterations":3000},'
     '"prune":{"method":"granet","final_density":0.02,"initial_density":0.5,"begin":100,"end":2000,"every":100,'
     '"drop_fraction":0.3,"allocation":"global"},'
     '"ap":{"enabled":true,"rate":0.02,"share":0.2,"survivor_share":0.025,"in_drop_and_grow":true,'
     '"options":{"sign":"any","score":"magnitude"},"from_event":2,"until_event":10},'
     '"init":"pytorch","eval_batch_size":1000}'),
    ("rigl+ap-lenet300-100-mnist-s3",
     '{"model":"lenet300-100","dataset":"mnist","seed":3,'
     '"train":{"optimizer":{"kind":"adam","lr":0.0012,"beta1":0.9,"beta2":0.999,"eps":1e-8,"weight_decay":0.0},'
     '"schedule":{"kind":"constant"},"batch_size":60,"iterations":6000},'
     '"prune":{"method":"rigl","density":0.03125,"every":100,"drop_fraction":0.3,"end_fraction":0.75,'
     '"dense_layers":["fc3.weight"],"dense_in_budget":false},'
     '"ap":{"enabled":true,"rate":0.02,"share":0.1,"survivor_share":0.025,"in_drop_and_grow":true,'
     '"options":{"sign":"negative","score":{"random":{"seed":7}}},"from_event":0,"until_event":null},'
     '"init":"pytorch","eval_batch_size":1000}'),
    ("bip+ap-lenet300-100-mnist-s1",
     '{"model":"lenet300-100","dataset":"mnist","seed":1,'
     '"train":{"optimizer":{"kind":"sgd","lr":0.1,"momentum":0.9,"weight_decay":0.0005,"nesterov":false},'
     '"schedule":{"kind":"cosine"},"batch_size":60,"iterations":3000},'
     '"prune":{"method":"bip","density":0.05,"lower_lr":0.01,"upper_lr":0.1,"implicit_lr":0.0001,'
     '"pretrain":true,"iterations":2000,"fine_tune_iterations":null},'
     + AP_ON + ',"init":"pytorch","eval_batch_size":1000}'),
]

print()
for name, canonical in CASES:
    print(f"{name}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}")
