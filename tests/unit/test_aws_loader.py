"""The trimming botocore loader (llm_gateway.aws.loader): the same endpoints and signing for every
client the package builds, in every partition, with far less of endpoints.json kept."""

from __future__ import annotations

import boto3
import pytest
from botocore.session import Session

from llm_gateway.aws.loader import SERVICES, botocore_session, trimmed_endpoints

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2", "cn-north-1", "us-gov-west-1"]


def described(session: boto3.session.Session, service: str, region: str, **config: bool) -> tuple:
    from botocore.config import Config

    client = session.client(
        service,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(**config),  # type: ignore[arg-type]
    )
    meta = client.meta
    return meta.endpoint_url, meta.region_name, meta.service_model.signing_name, meta.partition


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_clients_resolve_as_with_botocores_own_loader(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    ours, theirs = boto3.session.Session(botocore_session=botocore_session()), boto3.session.Session()
    for region in REGIONS:
        for config in ({}, {"use_fips_endpoint": True}, {"use_dualstack_endpoint": True}):
            try:
                expected = described(theirs, service, region, **config)
            except Exception as exc:  # a variant the service has not in that partition: the same error
                with pytest.raises(type(exc)):
                    described(ours, service, region, **config)
                continue
            assert described(ours, service, region, **config) == expected, (region, config)


def test_only_the_packages_services_are_kept_and_each_partition_otherwise_whole() -> None:
    full = Session().get_component("data_loader").load_data("endpoints")
    kept = trimmed_endpoints(full)
    assert [p["partition"] for p in kept["partitions"]] == [p["partition"] for p in full["partitions"]]
    for before, after in zip(full["partitions"], kept["partitions"], strict=True):
        assert {k: v for k, v in after.items() if k != "services"} == {
            k: v for k, v in before.items() if k != "services"
        }
        assert after["services"] == {k: v for k, v in before["services"].items() if k in SERVICES}
    loader = botocore_session().get_component("data_loader")
    assert loader.load_data("endpoints") == kept  # and the whole file is not cached next to it
    assert all(len(p["services"]) <= len(SERVICES) for p in loader.load_data("endpoints")["partitions"])


def test_a_client_for_a_service_whose_entry_is_not_kept_is_refused() -> None:
    from llm_gateway.aws import client

    with pytest.raises(ValueError, match="s3"):
        client("s3")
