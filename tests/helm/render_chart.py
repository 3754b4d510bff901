"""Lints and renders helm/reelfarm with helm-python-sdk for tests/helm_chart.rs.

usage: render_chart.py CHART_DIR OUT_DIR [VALUES_FILE ...]

For the default values and for each values file: `helm lint --strict`, then an offline
render (release "reelfarm", namespace "reelfarm"); every rendered document is written to
OUT_DIR/<set>/<NN>-<kind>-<name>.yaml for kubernetes-validate. A JSON report goes to stdout:
{"sets": [{"name", "lint": [messages], "documents": [{"file", "object"}], "notes"}],
 "schema_rejections": [{"case", "rejected", "error"}]}.
Exits non-zero when a lint finds an error or warning (strict) or a render fails.
"""

import json
import os
import sys

import yaml
import helm_python as helm

RELEASE = "reelfarm"
NAMESPACE = "reelfarm"

# Values the schema must refuse at install time, each with why.
BAD_VALUES = {
    "coordinator.replicas=0": {"coordinator": {"replicas": 0}},
    "worker.engine=gpu (not auto|cpu|cuda)": {"worker": {"engine": "gpu"}},
    "worker.slots=0": {"worker": {"slots": 0}},
    "worker.kind=StatefulSet": {"worker": {"kind": "StatefulSet"}},
    "etcd disabled without external endpoints": {"etcd": {"enabled": False}},
    "artifacts.type=nfs": {"artifacts": {"type": "nfs"}},
    "artifacts.type=s3 without a bucket": {"artifacts": {"type": "s3"}},
    "artifacts.s3.endpoint http:// without allowHttp": {
        "artifacts": {"type": "s3", "s3": {"bucket": "reelfarm", "endpoint": "http://minio:9000"}}
    },
    "cluster with capitals": {"cluster": "Prod"},
    "worker.engine=cuda without gpu.enabled": {"worker": {"engine": "cuda"}},
    # One worker per GPU: the worker runs on one device (--gpu), so a second would sit idle.
    "worker.gpu.count=2": {"worker": {"gpu": {"enabled": True, "count": 2}}},
    "worker.models.enabled without a volume": {"worker": {"models": {"enabled": True}}},
    "worker.models.mountPath relative": {
        "worker": {"models": {"enabled": True, "mountPath": "models", "volume": {"emptyDir": {}}}}
    },
    "unknown top-level key": {"coordinatr": {}},
    "image.pullPolicy=Sometimes": {"image": {"pullPolicy": "Sometimes"}},
    "coordinator.resultCache=yes (not a boolean)": {"coordinator": {"resultCache": "yes"}},
    "coordinator.artifactGcGraceSeconds=-1": {"coordinator": {"artifactGcGraceSeconds": -1}},
    "coordinator.tenantWeights weight 0": {"coordinator": {"tenantWeights": {"ads": 0}}},
    "coordinator.tenantWeights tenant with capitals": {"coordinator": {"tenantWeights": {"Ads": 2}}},
}


def main() -> int:
    chart_dir, out_dir, *values_files = sys.argv[1:]
    chart = helm.Chart.load(chart_dir)
    report = {"helm_sdk": helm.helm_sdk_version(), "sets": [], "schema_rejections": []}
    failed = False
    for values_file in [None, *values_files]:
        name = "default" if values_file is None else os.path.splitext(os.path.basename(values_file))[0]
        values = {}
        if values_file is not None:
            with open(values_file, encoding="utf-8") as f:
                values = helm.values_from_yaml(f.read())
        lint = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE)
        # severity: 1 info, 2 warning, 3 error; strict fails on warnings too.
        if any(m["severity"] >= 2 for m in lint["messages"]) or lint["errors"]:
            failed = True
        entry = {"name": name, "lint": lint["messages"], "lint_errors": lint["errors"], "documents": []}
        try:
            rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        except helm.HelmError as e:
            entry["render_error"] = str(e)
            failed = True
            report["sets"].append(entry)
            continue
        set_dir = os.path.join(out_dir, name)
        os.makedirs(set_dir, exist_ok=True)
        n = 0
        for template, text in sorted(rendered.items()):
            if template.endswith("NOTES.txt"):
                entry["notes"] = text
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                n += 1
                path = os.path.join(set_dir, f"{n:02d}-{doc['kind']}-{doc['metadata']['name']}.yaml")
                with open(path, "w", encoding="utf-8") as f:
                    yaml.safe_dump(doc, f, sort_keys=False)
                entry["documents"].append({"file": path, "template": template, "object": doc})
        report["sets"].append(entry)
    for case, values in BAD_VALUES.items():
        try:
            chart.validate_schema(chart.merge_values(values))
            report["schema_rejections"].append({"case": case, "rejected": False, "error": ""})
        except helm.HelmError as e:
            report["schema_rejections"].append({"case": case, "rejected": True, "error": str(e).strip()})
    json.dump(report, sys.stdout)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
