"""The stage table (orchestration/stages.py) as Dagster sees it: dependencies, code versions and sources.

Dagster judges staleness on its own (the UI's stale markers, automation conditions) from an asset's
dependencies, its code version and the data versions of what it read. Each of those comes from the stage
table here, so that Dagster and the runner (orchestration/freshness.py) agree on what is stale:

- dependencies with partition mappings that name exactly the (stage, partition) pairs each partition reads;
- code versions: the hash of the stage's code and, for an unpartitioned stage, of its settings slice;
- source assets whose data versions change when what they stand for changes: ``raw_dataset`` (the content
  of each raw folder) and ``<stage>_settings`` (the settings slice of each partition of a partitioned stage).
"""

import hashlib
import json
import warnings

import dagster as dg

from orchestration.freshness import (DATA_VERSION_TAG, expected_signature, latest_data_version, on_disk_data_version,
                                     raw_version)
from orchestration.stages import STAGES, code_files, output, partitions, upstream_steps
from orchestration.code_versions import hash_files

RAW_SOURCE = "raw_dataset"
CODE_VERSION_TAG = "dagster/code_version"
USER_PROVIDED_TAG = "dagster/data_version_is_user_provided"
INPUT_VERSION_TAG, INPUT_POINTER_TAG = "dagster/input_data_version/", "dagster/input_event_pointer/"
RESTORED = "restored"  # metadata key of a materialisation reported for what was found on disk


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def partitions_definition(config, name: str) -> dg.StaticPartitionsDefinition | None:
    if STAGES[name].partitioned_by is None:
        return None
    return dg.StaticPartitionsDefinition(partitions(config, STAGES[name]))


def settings_source(config, name: str) -> str | None:
    """The source asset standing for a partitioned stage's per-partition settings (None: it has none)."""
    stage = STAGES[name]
    if stage.partitioned_by is None or all(stage.settings(config, p) is None for p in partitions(config, stage)):
        return None
    return f"{name}_settings"


def asset_code_version(config, name: str) -> str:
    """One code version per asset: for conversions all converters' code; for an unpartitioned stage its
    settings too (a partitioned stage's settings are its settings source's data versions instead)."""
    files = code_files(name)
    if name == "dataset":
        from assets.converters import CONVERTERS

        files += [f"assets/converters/{converter}.py" for converter in CONVERTERS]
    code = hash_files(files)
    stage = STAGES[name]
    if stage.partitioned_by is None and stage.settings(config, None) is not None:
        return f"{code}-{_digest(stage.settings(config, None))}"
    return code


def asset_deps(config, name: str) -> list[dg.AssetDep]:
    """The stage's inputs as Dagster dependencies, partition by partition."""
    stage = STAGES[name]
    reads: dict[str, list[tuple]] = {}  # upstream stage -> [(partition, upstream partition)]
    for partition in partitions(config, stage):
        for upstream, upstream_partition in stage.inputs(config, partition):
            reads.setdefault(upstream, []).append((partition, upstream_partition))
    deps = []
    for upstream, pairs in reads.items():
        if STAGES[upstream].partitioned_by is None:
            deps.append(dg.AssetDep(upstream))
        elif stage.partitioned_by is None:
            read = sorted({u for _, u in pairs})
            deps.append(dg.AssetDep(upstream, partition_mapping=dg.SpecificPartitionsPartitionMapping(read)))
        else:
            mapping: dict[str, set] = {}
            for partition, upstream_partition in pairs:
                mapping.setdefault(upstream_partition, set()).add(partition)
            deps.append(dg.AssetDep(upstream, partition_mapping=dg.StaticPartitionMapping(mapping)))
    return deps + [dg.AssetDep(source) for source in _sources(config, name)]


def source_versions(config) -> dict[str, dict[str, str]]:
    """{source asset: {partition: data version}}: raw folder contents (from the hash cache: unchanged files
    are not read) and each partitioned stage's settings."""
    versions = {RAW_SOURCE: {name: raw_version(config, name) for name in sorted(config.datasets)}}
    for name, stage in STAGES.items():
        if (source := settings_source(config, name)) is not None:
            versions[source] = {p: _digest(stage.settings(config, p)) for p in partitions(config, stage)}
    return versions


def _source_asset(config, source: str, partitions_def, group: str, description: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # observable source assets are beta, and what we need

        @dg.observable_source_asset(name=source, partitions_def=partitions_def, group_name=group,
                                    description=description)
        def observe(context):
            return dg.DataVersionsByPartition(source_versions(config)[source])

    return observe


def source_assets(config) -> list:
    assets = [_source_asset(config, RAW_SOURCE, partitions_definition(config, "dataset"), "datasets",
                            "Raw dataset folders as configured in params.yaml (content hash).")]
    for name, stage in STAGES.items():
        if (source := settings_source(config, name)) is not None and partitions(config, stage):
            assets.append(_source_asset(config, source, partitions_definition(config, name), stage.group,
                                        f"The params.yaml settings of each {name} partition (hash)."))
    return assets


def latest_observed_version(instance: dg.DagsterInstance, source: str, partition: str) -> str | None:
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(source), asset_partitions=[partition]), limit=1).records
    observation = records[0].asset_observation if records else None
    return observation.tags.get(DATA_VERSION_TAG) if observation is not None and observation.tags else None


def observe_sources(config, instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    """Record an observation of every source partition whose data version changed since the last one
    (what the Dagster UI's stale markers and the automation conditions compare against); returns those."""
    return record_observations(instance, source_versions(config))


def record_observations(instance: dg.DagsterInstance, versions: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """``observe_sources`` with the versions already computed (``source_versions``)."""
    changed = []
    for source, by_partition in versions.items():
        for partition, version in by_partition.items():
            if latest_observed_version(instance, source, partition) != version:
                instance.report_runless_asset_event(dg.AssetObservation(
                    source, partition=partition, tags={DATA_VERSION_TAG: version}))
                changed.append((source, partition))
    return changed


def record_restored_versions(config, instance: dg.DagsterInstance, steps) -> list[tuple[str, str | None]]:
    """Report to Dagster, as a materialisation, every output among ``steps`` ((asset, partition) pairs, in
    graph order) whose data version on disk is not the one the instance last recorded: something other
    than a Dagster run put it there. Returns those steps."""
    found = [(asset, partition, on_disk) for asset, partition in steps
             if (on_disk := on_disk_data_version(config, asset, partition)) is not None
             and on_disk != latest_data_version(instance, asset, partition)]
    if any(_sources(config, asset) for asset, _, _ in found):
        observe_sources(config, instance)  # the restored versions' provenance names the sources' versions
    restored = []
    for asset, partition, on_disk in found:
        tags = {DATA_VERSION_TAG: on_disk, CODE_VERSION_TAG: asset_code_version(config, asset),
                USER_PROVIDED_TAG: "true", **_input_provenance(config, instance, asset, partition)}
        instance.report_runless_asset_event(dg.AssetMaterialization(
            asset, partition=partition, tags=tags,
            metadata={RESTORED: "found on disk with a data version no Dagster run recorded last (dvc checkout, "
                                "dvc pull or a DVC run-cache restore)",
                      "path": dg.MetadataValue.path(str(output(config, asset, partition)))}))
        restored.append((asset, partition))
    return restored


def _sources(config, asset: str) -> list[str]:
    """The source assets a stage's partitions read (besides other stages' outputs)."""
    return ([RAW_SOURCE] if asset == "dataset" else []) + [s for s in [settings_source(config, asset)] if s]


def _input_provenance(config, instance: dg.DagsterInstance, asset: str, partition: str | None) -> dict:
    """The input tags Dagster gives a materialisation of ``asset`` (``partition``) made by a run now, so that
    the UI judges a restored version as it would the same version made by a run: per input asset, the data
    version of what it reads and the storage id of its latest event. A partitioned input's version is, as
    Dagster computes it, a sha256 of the partitions' latest materialised versions in partition order (for a
    source, whose partitions are observed and never materialised, the sha256 of nothing: Dagster's too)."""
    reads: dict[str, list] = {}
    for upstream, upstream_partition in STAGES[asset].inputs(config, partition):
        reads.setdefault(upstream, []).append(upstream_partition)
    sources = _sources(config, asset)
    for source in sources:
        reads[source] = [partition]
    tags = {}
    for upstream, upstream_partitions in reads.items():
        key = dg.AssetKey(upstream)
        records = instance.get_asset_records([key])
        entry = records[0].asset_entry if records else None
        event = entry and (entry.last_materialization_record or entry.last_observation_record)
        if event is None and upstream in sources:  # not every storage keeps a last observation
            event = next(iter(instance.fetch_observations(key, limit=1).records), None)
        if event is None:
            continue
        if upstream_partitions != [None]:
            by_partition = instance.event_log_storage.get_latest_tags_by_partition(
                key, dg.DagsterEventType.ASSET_MATERIALIZATION, [DATA_VERSION_TAG],
                asset_partitions=[p for p in upstream_partitions if p is not None])
            version = hashlib.sha256("".join(tags_[DATA_VERSION_TAG] for _, tags_ in sorted(by_partition.items()))
                                     .encode()).hexdigest()
        else:
            version = (event.event_log_entry.tags or {}).get(DATA_VERSION_TAG)
        if version is not None:
            tags[INPUT_VERSION_TAG + upstream] = version
            tags[INPUT_POINTER_TAG + upstream] = str(event.storage_id)
    return tags


def current_signature(config, instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> str:
    """``expected_signature`` for a run of ``asset`` that is about to read its inputs: inputs restored by
    another tool are recorded first (with everything upstream of them, for their provenance), so the
    signature names what the run reads."""
    record_restored_versions(config, instance, upstream_steps(config, asset, partition))
    return expected_signature(config, instance, asset, partition)
