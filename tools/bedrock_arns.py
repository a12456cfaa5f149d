#!/usr/bin/env python3
"""Print the Bedrock ARNs a routing document needs, for the template's BedrockModelArns parameter.

The functions may invoke only these (template.yaml grants bedrock:InvokeModel[WithResponseStream]
on exactly this list), so derive it from the same routing document the stack is deployed with:

    make bedrock-arns ROUTING=config/routing.json REGION=us-east-1
    sam deploy --parameter-overrides BedrockModelArns=$(make -s bedrock-arns ROUTING=... REGION=...)

The document is parsed by the gateway's own parser (llm_gateway.upstream.aliases), so a document
this accepts is one the gateway accepts. Per bedrock deployment (region = its "region", else
--region, the stack's):

- a model id (anthropic.claude-3-5-haiku-20241022-v1:0) -> that foundation model in that region;
- a cross-region inference profile id (us./eu./apac./global.<model id>) -> the profile in that
  region, plus the foundation model in every region (the profile routes requests to the regions
  AWS defines for it, and each needs the model permission);
- an ARN (an application inference profile, a provisioned model) -> itself, as given.

Prints one comma-separated line (empty when the document has no bedrock deployment: then the
template grants no Bedrock permission at all).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers" / "common"))

# Geography prefixes of Bedrock's system-defined cross-region inference profiles.
PROFILE_PREFIXES = ("us.", "us-gov.", "eu.", "apac.", "jp.", "au.", "ca.", "global.")


def arns_for(model: str, region: str, *, partition: str, account: str) -> list[str]:
    if model.startswith("arn:"):
        return [model]
    if model.startswith(PROFILE_PREFIXES):
        base = model.split(".", 1)[1]
        return [
            f"arn:{partition}:bedrock:{region}:{account}:inference-profile/{model}",
            f"arn:{partition}:bedrock:*::foundation-model/{base}",
        ]
    return [f"arn:{partition}:bedrock:{region}::foundation-model/{model}"]


def bedrock_arns(text: str, source: str, *, region: str, partition: str = "aws", account: str = "*") -> list[str]:
    from llm_gateway.settings import Settings
    from llm_gateway.upstream.aliases import parse_routing

    routing = parse_routing(text, source, Settings(aws_region=region))
    out: list[str] = []
    for deployment in routing.deployments().values():
        if deployment.provider == "bedrock":
            for arn in arns_for(deployment.model, deployment.region or region, partition=partition, account=account):
                if arn not in out:
                    out.append(arn)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "routing",
        nargs="?",
        type=Path,
        default=ROOT / "layers/common/llm_gateway/upstream/routing.json",
        help="routing document (default: the one shipped in the layer)",
    )
    parser.add_argument("--region", required=True, help="the stack's region (deployments without 'region')")
    parser.add_argument("--partition", default="aws")
    parser.add_argument("--account", default="*", help="account id for inference-profile ARNs (default: any)")
    args = parser.parse_args(argv)

    from llm_gateway.errors import ConfigurationError

    try:
        arns = bedrock_arns(
            args.routing.read_text(encoding="utf-8"),
            str(args.routing),
            region=args.region,
            partition=args.partition,
            account=args.account,
        )
    except (OSError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if any("," in arn for arn in arns):
        print("error: an ARN contains a comma; it cannot go in a CommaDelimitedList", file=sys.stderr)
        return 2
    print(",".join(arns))
    return 0


if __name__ == "__main__":
    sys.exit(main())
