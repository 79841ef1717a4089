# Keeps a CRD's served storage version only and drops descriptions: the same schema, smaller.
import sys, yaml
def strip(node):
    if isinstance(node, dict):
        return {k: strip(v) for k, v in node.items() if k != "description" or not isinstance(v, str)}
    if isinstance(node, list):
        return [strip(v) for v in node]
    return node
src, keep, out = sys.argv[1], sys.argv[2], sys.argv[3]
crd = yaml.safe_load(open(src))
crd["spec"]["versions"] = [strip(v) for v in crd["spec"]["versions"] if v["name"] == keep]
yaml.safe_dump(crd, open(out, "w"), sort_keys=False, width=1000)
