//! The AWS resources of the template, by physical name. [`create`] makes them on an
//! AWS-API endpoint (moto in the tests, or an empty dev account without CloudFormation)
//! straight from the parsed template — there is no second hand-written list — and
//! [`locate`] finds those of a deployed stage.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType, ScalarAttributeType,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_sqs::types::QueueAttributeName;
use o2c_app::O2cError;
use o2c_topology::topology::{KeyDef, Topology};

use crate::dynamo::Tables;

/// Physical resources of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// Stage.
    pub stage: String,
    /// Bus name.
    pub bus_name: String,
    /// Bus ARN.
    pub bus_arn: String,
    /// Archive name, when the template declares one.
    pub archive_name: Option<String>,
    /// Queue URL by logical id.
    pub queue_urls: HashMap<String, String>,
    /// Queue ARN by logical id.
    pub queue_arns: HashMap<String, String>,
    /// Tables.
    pub tables: Tables,
}

/// An existing table of the stage has the template's key schema and index names, or the
/// difference is named (a bootstrap never changes a table that holds data).
async fn same_table(ddb: &aws_sdk_dynamodb::Client, name: &str, t: &o2c_topology::topology::TableDef) -> Result<(), O2cError> {
    let d = ddb.describe_table().table_name(name).send().await.map_err(|e| dep("dynamodb", e))?;
    let table = d.table().ok_or_else(|| O2cError::dependency("dynamodb", format!("DescribeTable {name}: no table")))?;
    let keys: Vec<(String, String)> =
        table.key_schema().iter().map(|k| (k.attribute_name().to_owned(), k.key_type().as_str().to_owned())).collect();
    let mut wanted = vec![(t.hash.name.clone(), "HASH".to_owned())];
    if let Some(r) = &t.range {
        wanted.push((r.name.clone(), "RANGE".to_owned()));
    }
    let mut indexes: Vec<&str> = table.global_secondary_indexes().iter().filter_map(|i| i.index_name()).collect();
    let mut wanted_indexes: Vec<&str> = t.indexes.iter().map(|i| i.name.as_str()).collect();
    indexes.sort_unstable();
    wanted_indexes.sort_unstable();
    if keys != wanted || indexes != wanted_indexes {
        return Err(O2cError::Validation(vec![o2c_domain::events::Issue::new(
            "table",
            "table_differs",
            format!(
                "table {name} exists with keys {keys:?} and indexes {indexes:?}; the template wants {wanted:?} and {wanted_indexes:?} \
                 (delete it or use another stage)"
            ),
        )]));
    }
    Ok(())
}

/// The service error code of a failed call (`ResourceInUseException`, …).
fn code<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &aws_sdk_dynamodb::error::SdkError<E, R>) -> Option<&str> {
    e.as_service_error().and_then(aws_sdk_dynamodb::error::ProvideErrorMetadata::code)
}

fn dep(service: &str, e: impl std::error::Error + 'static) -> O2cError {
    crate::sdk_error(service, &e)
}

fn key(k: &KeyDef, kt: KeyType) -> Result<KeySchemaElement, O2cError> {
    KeySchemaElement::builder().attribute_name(&k.name).key_type(kt).build().map_err(|e| O2cError::Bug(e.to_string()))
}

fn attr(k: &KeyDef) -> Result<AttributeDefinition, O2cError> {
    let t = match k.attribute_type.as_str() {
        "N" => ScalarAttributeType::N,
        "B" => ScalarAttributeType::B,
        _ => ScalarAttributeType::S,
    };
    AttributeDefinition::builder().attribute_name(&k.name).attribute_type(t).build().map_err(|e| O2cError::Bug(e.to_string()))
}

fn table_names(topo: &Topology, stage: &str) -> Tables {
    Tables { state: topo.table_name("StateTable", stage), idempotency: topo.table_name("IdempotencyTable", stage) }
}

/// Creates every table, the bus, the archive, every queue (with redrive policies) and
/// every rule with its targets. `visibility_override` shortens visibility timeouts for
/// tests (the template's 180 s would make every retry wait three minutes). Run again on an
/// existing stage it keeps what exists — tables with their data, the bus, the archive — and
/// puts the queues, rules and targets again (idempotent calls).
pub async fn create(
    sdk: &aws_config::SdkConfig,
    topo: &Topology,
    stage: &str,
    visibility_override: Option<u32>,
) -> Result<Deployed, O2cError> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let events = aws_sdk_eventbridge::Client::new(sdk);

    for t in topo.tables.values() {
        let name = topo.table_name(&t.logical_id, stage);
        let mut attrs = vec![attr(&t.hash)?];
        let mut keys = vec![key(&t.hash, KeyType::Hash)?];
        if let Some(r) = &t.range {
            attrs.push(attr(r)?);
            keys.push(key(r, KeyType::Range)?);
        }
        let mut req = ddb.create_table().table_name(&name).billing_mode(BillingMode::PayPerRequest).set_key_schema(Some(keys));
        for i in &t.indexes {
            for k in std::iter::once(&i.hash).chain(i.range.as_ref()) {
                if !attrs.iter().any(|a| a.attribute_name() == k.name) {
                    attrs.push(attr(k)?);
                }
            }
            let mut ks = vec![key(&i.hash, KeyType::Hash)?];
            if let Some(r) = &i.range {
                ks.push(key(r, KeyType::Range)?);
            }
            let projection = match i.projection.as_str() {
                "KEYS_ONLY" => Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
                "INCLUDE" => Projection::builder()
                    .projection_type(ProjectionType::Include)
                    .set_non_key_attributes(Some(i.non_key_attributes.clone()))
                    .build(),
                _ => Projection::builder().projection_type(ProjectionType::All).build(),
            };
            req = req.global_secondary_indexes(
                GlobalSecondaryIndex::builder()
                    .index_name(&i.name)
                    .set_key_schema(Some(ks))
                    .projection(projection)
                    .build()
                    .map_err(|e| O2cError::Bug(e.to_string()))?,
            );
        }
        match req.set_attribute_definitions(Some(attrs)).send().await {
            Ok(_) => {}
            // Bootstrapping an existing stage again keeps its tables (and their data) when
            // they have the template's keys and indexes; a different one is named.
            Err(e) if code(&e) == Some("ResourceInUseException") => same_table(&ddb, &name, t).await?,
            Err(e) => return Err(dep("dynamodb", e)),
        }
        if let Some(ttl) = &t.ttl_attribute {
            // An earlier, interrupted bootstrap may have left the table without its TTL.
            let current = ddb.describe_time_to_live().table_name(&name).send().await.map_err(|e| dep("dynamodb", e))?;
            let on = current.time_to_live_description().is_some_and(|d| {
                d.attribute_name() == Some(ttl.as_str())
                    && matches!(d.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling))
            });
            if on {
                continue;
            }
            ddb.update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(ttl)
                        .enabled(true)
                        .build()
                        .map_err(|e| O2cError::Bug(e.to_string()))?,
                )
                .send()
                .await
                .map_err(|e| dep("dynamodb", e))?;
        }
    }

    let bus_name = topo.bus_name(stage);
    let bus_arn = match events.create_event_bus().name(&bus_name).send().await {
        Ok(bus) => bus.event_bus_arn().unwrap_or_default().to_owned(),
        Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {
            let bus = events.describe_event_bus().name(&bus_name).send().await.map_err(|e| dep("eventbridge", e))?;
            bus.arn().unwrap_or_default().to_owned()
        }
        Err(e) => return Err(dep("eventbridge", e)),
    };
    let archive_name = topo.archive_name.as_deref().map(|n| Topology::resolve(n, stage, "", ""));
    if let Some(a) = &archive_name {
        let created = events
            .create_archive()
            .archive_name(a)
            .event_source_arn(&bus_arn)
            .event_pattern(r#"{"source":[{"prefix":"o2c."}]}"#)
            .retention_days(365)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if code(&e) == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(dep("eventbridge", e)),
        }
    }

    // DLQs first: source queues' redrive policies name their ARNs.
    let mut queue_urls = HashMap::new();
    let mut queue_arns = HashMap::new();
    let mut order: Vec<&o2c_topology::topology::QueueDef> = topo.queues.values().collect();
    order.sort_by_key(|q| q.redrive.is_some());
    for q in order {
        let name = topo.queue_name(&q.logical_id, stage);
        let vis = visibility_override.unwrap_or(q.visibility_timeout_secs);
        let mut attributes = HashMap::from([
            (QueueAttributeName::VisibilityTimeout, vis.to_string()),
            (QueueAttributeName::MessageRetentionPeriod, q.retention_secs.to_string()),
        ]);
        if let Some(rd) = &q.redrive {
            let dlq_arn = queue_arns
                .get(&rd.dead_letter_queue)
                .cloned()
                .ok_or_else(|| O2cError::Bug(format!("DLQ {} not created yet", rd.dead_letter_queue)))?;
            let policy = serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": rd.max_receive_count.to_string()});
            attributes.insert(QueueAttributeName::RedrivePolicy, policy.to_string());
        }
        let mut create = attributes.clone();
        if q.fifo {
            create.insert(QueueAttributeName::FifoQueue, "true".to_owned());
        }
        let url = match sqs.create_queue().queue_name(&name).set_attributes(Some(create)).send().await {
            Ok(out) => out.queue_url().unwrap_or_default().to_owned(),
            // The queue exists with other attributes (the template changed): keep it and its
            // messages, and set the template's attributes on it.
            Err(e) if matches!(code(&e), Some("QueueAlreadyExists" | "QueueNameExists")) => {
                let url = sqs
                    .get_queue_url()
                    .queue_name(&name)
                    .send()
                    .await
                    .map_err(|e| dep("sqs", e))?
                    .queue_url()
                    .unwrap_or_default()
                    .to_owned();
                sqs.set_queue_attributes().queue_url(&url).set_attributes(Some(attributes)).send().await.map_err(|e| dep("sqs", e))?;
                url
            }
            Err(e) => return Err(dep("sqs", e)),
        };
        let arn = queue_arn(&sqs, &url).await?;
        queue_urls.insert(q.logical_id.clone(), url);
        queue_arns.insert(q.logical_id.clone(), arn);
    }

    for r in &topo.rules {
        let rule_name = format!("o2c-{stage}-{}", r.logical_id);
        events
            .put_rule()
            .name(&rule_name)
            .event_bus_name(&bus_name)
            .event_pattern(r.pattern.to_string())
            .send()
            .await
            .map_err(|e| dep("eventbridge", e))?;
        let mut targets = Vec::new();
        for t in &r.targets {
            let arn = queue_arns.get(&t.queue).cloned().unwrap_or_default();
            let mut b = aws_sdk_eventbridge::types::Target::builder().id(&t.id).arn(arn);
            if let Some(g) = &t.message_group_id {
                b = b.sqs_parameters(aws_sdk_eventbridge::types::SqsParameters::builder().message_group_id(g).build());
            }
            targets.push(b.build().map_err(|e| O2cError::Bug(e.to_string()))?);
        }
        events
            .put_targets()
            .rule(&rule_name)
            .event_bus_name(&bus_name)
            .set_targets(Some(targets))
            .send()
            .await
            .map_err(|e| dep("eventbridge", e))?;
    }
    Ok(Deployed { stage: stage.to_owned(), bus_name, bus_arn, archive_name, queue_urls, queue_arns, tables: table_names(topo, stage) })
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<String, O2cError> {
    let attrs =
        sqs.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await.map_err(|e| dep("sqs", e))?;
    attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| O2cError::dependency("sqs", format!("no ARN for {url}")))
}

/// Finds the resources of a deployed stage by the template's names.
pub async fn locate(sdk: &aws_config::SdkConfig, topo: &Topology, stage: &str) -> Result<Deployed, O2cError> {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let events = aws_sdk_eventbridge::Client::new(sdk);
    let bus_name = topo.bus_name(stage);
    let bus = events.describe_event_bus().name(&bus_name).send().await.map_err(|e| dep("eventbridge", e))?;
    let mut queue_urls = HashMap::new();
    let mut queue_arns = HashMap::new();
    for q in topo.queues.values() {
        let name = topo.queue_name(&q.logical_id, stage);
        let url = sqs.get_queue_url().queue_name(&name).send().await.map_err(|e| dep("sqs", e))?.queue_url().unwrap_or_default().to_owned();
        queue_arns.insert(q.logical_id.clone(), queue_arn(&sqs, &url).await?);
        queue_urls.insert(q.logical_id.clone(), url);
    }
    Ok(Deployed {
        stage: stage.to_owned(),
        bus_name,
        bus_arn: bus.arn().unwrap_or_default().to_owned(),
        archive_name: topo.archive_name.as_deref().map(|n| Topology::resolve(n, stage, "", "")),
        queue_urls,
        queue_arns,
        tables: table_names(topo, stage),
    })
}

/// Waits until a table is ACTIVE (real DynamoDB creates tables asynchronously).
pub async fn wait_for_tables(sdk: &aws_config::SdkConfig, tables: &Tables, max: Duration) -> Result<(), O2cError> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let start = std::time::Instant::now();
    for t in [&tables.state, &tables.idempotency] {
        loop {
            let d = ddb.describe_table().table_name(t).send().await.map_err(|e| dep("dynamodb", e))?;
            if d.table().and_then(|t| t.table_status()).map(|s| s.as_str()) == Some("ACTIVE") {
                break;
            }
            if start.elapsed() > max {
                return Err(O2cError::dependency("dynamodb", format!("table {t} not ACTIVE after {max:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
