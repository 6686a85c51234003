//! The AWS ingestion function (`functions/ingest`) against moto_server: a stage created
//! from the template, real SDK clients, HTTP API requests as API Gateway delivers them
//! (payload format 2.0). A vendor payload posted with AWS credentials (the IAM route) needs
//! the identity API Gateway passes, and no vendor signature. A vendor's signed webhook is verified before its payload is read,
//! mapped by the repository's mapping files and published — the event reaches its step's
//! queue through the template's rule; everything else is refused with its status and
//! reason and publishes nothing; an unmappable payload is parked in the state table with its
//! secrets redacted.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use o2c_app::clock::{Clock, SystemClock};
use o2c_app::ports::RejectionStore;
use o2c_aws::dynamo::DynamoStore;
use o2c_aws::eventbridge::EventBridgePublisher;
use o2c_aws::ingest::{IAM_ROUTE, Ingest, IngestConfig, WEBHOOK_ROUTE};
use o2c_aws::resources::{Deployed, create};
use o2c_mapping::registry::Loaded;
use o2c_mapping::webhooks::sign;
use o2c_topology::topology::Topology;
use serde_json::{Value, json};

const TEMPLATE: &str = include_str!("../../../infra/template.yaml");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The repository's mappings, as `functions/ingest/build.rs` compiles them in.
fn mappings() -> Loaded {
    let texts = mapping_files();
    Loaded::from_sources(texts.iter().map(|(n, t)| (n.as_str(), t.as_str()))).unwrap()
}

/// The repository's mapping files, `(name, yaml)`.
fn mapping_files() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    let root = repo().join("mappings");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .iter()
        .map(|f| (f.strip_prefix(&root).unwrap().with_extension("").to_string_lossy().into_owned(), std::fs::read_to_string(f).unwrap()))
        .collect()
}

fn example(name: &str) -> Vec<u8> {
    std::fs::read(repo().join(format!("mappings/{name}.example.json"))).unwrap()
}

struct Stage {
    sdk: aws_config::SdkConfig,
    deployed: Deployed,
}

impl Stage {
    async fn new() -> Self {
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL must point at moto_server (scripts/test.sh)");
        let sdk = o2c_aws::sdk_config().await;
        let topo = Topology::from_sam_yaml(TEMPLATE).unwrap();
        let stage = format!("i{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let deployed = create(&sdk, &topo, &stage, Some(2)).await.expect("resources created from the template");
        Self { sdk, deployed }
    }

    fn function(&self, secrets: &str, sources: Option<&str>) -> Ingest {
        let mut vars = vec![
            ("EVENT_BUS_NAME", self.deployed.bus_name.clone()),
            ("STATE_TABLE", self.deployed.tables.state.clone()),
            ("WEBHOOK_SECRETS", secrets.to_owned()),
            ("INGEST_MAX_BODY_BYTES", "65536".to_owned()),
        ];
        if let Some(s) = sources {
            vars.push(("INGEST_SOURCES", s.to_owned()));
        }
        let config = IngestConfig::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        let publisher = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&self.sdk), self.deployed.bus_name.clone());
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), self.deployed.tables.clone());
        Ingest::new(mappings(), config, publisher, store, Arc::new(SystemClock))
    }

    fn store(&self) -> DynamoStore {
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&self.sdk), self.deployed.tables.clone())
    }

    /// The bodies of the events waiting in a step's queue (received and deleted).
    async fn drain(&self, queue: &str) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let url = &self.deployed.queue_urls[queue];
        let mut out = Vec::new();
        for _ in 0..3 {
            let r = sqs.receive_message().queue_url(url).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
            for m in r.messages() {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                sqs.delete_message().queue_url(url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
            }
        }
        out
    }
}

/// An HTTP API request (payload format 2.0) as API Gateway passes it for the route
/// `POST /v1/webhooks/{vendor}/{object}`.
fn request(vendor: &str, object: &str, body: &[u8], headers: &[(&str, String)], base64: bool) -> ApiGatewayV2httpRequest {
    request_on(WEBHOOK_ROUTE, vendor, object, body, headers, base64)
}

/// The same for the `AWS_IAM`-authorized route `POST /v1/ingest/{vendor}/{object}`, with the
/// identity API Gateway passes once it has verified the caller's SigV4 signature (`None`:
/// the route was deployed without the authorizer).
fn iam_request(vendor: &str, object: &str, body: &[u8], caller: Option<&str>) -> ApiGatewayV2httpRequest {
    let mut v = serde_json::to_value(request_on(IAM_ROUTE, vendor, object, body, &[], false)).unwrap();
    if let Some(arn) = caller {
        v["requestContext"]["authorizer"] = json!({"iam": {
            "accessKey": "ASIAEXAMPLEKEY000001", "accountId": "123456789012", "callerId": "AROAEXAMPLEROLE:flow-7",
            "principalOrgId": null, "userArn": arn, "userId": "AROAEXAMPLEROLE:flow-7"
        }});
    }
    serde_json::from_value(v).unwrap()
}

/// A request on `route_key` (`POST /v1/…/{vendor}/{object}`), its path filled in.
fn request_on(
    route_key: &str,
    vendor: &str,
    object: &str,
    body: &[u8],
    headers: &[(&str, String)],
    base64: bool,
) -> ApiGatewayV2httpRequest {
    use base64::Engine as _;
    let path = route_key.trim_start_matches("POST ").replace("{vendor}", vendor).replace("{object}", object);
    let mut h = serde_json::Map::new();
    h.insert("content-type".into(), json!("application/json"));
    for (k, v) in headers {
        h.insert((*k).to_owned(), json!(v));
    }
    let body = if base64 { base64::engine::general_purpose::STANDARD.encode(body) } else { String::from_utf8(body.to_vec()).unwrap() };
    serde_json::from_value(json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": h,
        "requestContext": {
            "accountId": "123456789012", "apiId": "a1b2c3d4e5", "domainName": "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "54.187.174.169", "userAgent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"},
            "requestId": format!("req-{}", uuid::Uuid::new_v4().simple()), "routeKey": route_key,
            "stage": "$default", "time": "04/Dec/2026:05:30:00 +0000", "timeEpoch": 1_796_362_200_000_i64
        },
        "pathParameters": {"vendor": vendor, "object": object},
        "body": body,
        "isBase64Encoded": base64
    }))
    .unwrap()
}

fn json_of(r: &ApiGatewayV2httpResponse) -> Value {
    match &r.body {
        Some(Body::Text(t)) => serde_json::from_str(t).unwrap(),
        other => panic!("a JSON text body, not {other:?}"),
    }
}

fn stripe_signed(body: &[u8], secret: &str, at: i64) -> Vec<(&'static str, String)> {
    vec![("stripe-signature", sign("stripe", body, secret, at).unwrap())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_vendor_webhook_arrives_should_verify_its_signature_map_it_and_publish_it_to_its_step() {
    let stage = Stage::new().await;
    let f = stage.function(r#"{"stripe": ["whsec_old", "whsec_new"], "docusign": "ds-connect-key"}"#, None);
    let now = SystemClock.now().timestamp();

    // Stripe, signed with the newer of two rolling secrets, sent base64-encoded.
    let body = example("stripe/payment_intent.succeeded");
    let resp = f.handle(request("stripe", "payment_intent.succeeded", &body, &stripe_signed(&body, "whsec_new", now), true)).await;
    let answer = json_of(&resp);
    assert_eq!((resp.status_code, answer["FailedEntryCount"].as_u64()), (200, Some(0)), "{answer}");
    assert_eq!(answer["Mapping"], "stripe/payment_intent.succeeded");
    let delivered = stage.drain("CashApplicationQueue").await;
    let payments: Vec<&Value> = delivered.iter().filter(|e| e["detail-type"] == "PaymentReceived").collect();
    assert_eq!(payments.len(), 1, "{delivered:?}");
    assert_eq!(payments[0]["source"], "o2c.bank");
    assert_eq!(payments[0]["detail"]["payload"]["amount"], json!({"amount": "50000.00", "currency": "EUR"}));

    // DocuSign Connect, its HMAC in X-DocuSign-Signature-2 (the second active key).
    let body = example("docusign/envelope-completed");
    let sig = sign("docusign", &body, "ds-connect-key", now).unwrap();
    let headers = vec![("x-docusign-signature-1", "bm90IGl0".to_owned()), ("x-docusign-signature-2", sig)];
    let resp = f.handle(request("docusign", "envelope-completed", &body, &headers, false)).await;
    assert_eq!(resp.status_code, 200, "{}", json_of(&resp));
    let delivered = stage.drain("ProvisionQueue").await;
    assert!(delivered.iter().any(|e| e["detail-type"] == "ContractApproved" && e["source"] == "o2c.clm"), "{delivered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_webhook_is_forged_replayed_oversized_or_unknown_should_refuse_it_with_its_status_and_publish_nothing() {
    let stage = Stage::new().await;
    let f = stage.function(r#"{"stripe": "whsec_live"}"#, None);
    let now = SystemClock.now().timestamp();
    let body = example("stripe/payment_intent.succeeded");
    let status = |r: &ApiGatewayV2httpResponse| (r.status_code, json_of(r)["ErrorCode"].as_str().unwrap_or_default().to_owned());

    let cases: Vec<(&str, ApiGatewayV2httpRequest, (i64, &str))> = vec![
        ("no signature", request("stripe", "payment_intent.succeeded", &body, &[], false), (401, "InvalidSignature")),
        (
            "another secret",
            request("stripe", "payment_intent.succeeded", &body, &stripe_signed(&body, "whsec_attacker", now), false),
            (401, "InvalidSignature"),
        ),
        (
            "a replay six minutes later",
            request("stripe", "payment_intent.succeeded", &body, &stripe_signed(&body, "whsec_live", now - 360), false),
            (401, "InvalidSignature"),
        ),
        (
            "a body changed after signing",
            request(
                "stripe",
                "payment_intent.succeeded",
                &String::from_utf8(body.clone()).unwrap().replace("5000000", "9000000").into_bytes(),
                &stripe_signed(&body, "whsec_live", now),
                false,
            ),
            (401, "InvalidSignature"),
        ),
        (
            "a vendor without a secret here",
            request(
                "docusign",
                "envelope-completed",
                &example("docusign/envelope-completed"),
                &[("x-docusign-signature-1", "AAAA".into())],
                false,
            ),
            (401, "InvalidSignature"),
        ),
        (
            "no such mapping",
            request("stripe", "charge.refunded", &body, &stripe_signed(&body, "whsec_live", now), false),
            (404, "ResourceNotFoundException"),
        ),
        (
            "a vendor that signs nothing",
            request("salesforce", "opportunity", &example("salesforce/opportunity"), &[], false),
            (404, "ResourceNotFoundException"),
        ),
        (
            "oversize",
            {
                let big = vec![b' '; 70_000];
                request("stripe", "payment_intent.succeeded", &big, &stripe_signed(&big, "whsec_live", now), false)
            },
            (413, "RequestEntityTooLarge"),
        ),
    ];
    for (what, req, want) in cases {
        let resp = f.handle(req).await;
        assert_eq!(status(&resp), (want.0, want.1.to_owned()), "{what}: {}", json_of(&resp));
        assert!(!json_of(&resp)["ErrorMessage"].as_str().unwrap().contains("whsec_live"), "{what}: never the secret");
    }
    // A function whose sources exclude the bank's may not publish a payment.
    let narrow = stage.function(r#"{"stripe": "whsec_live"}"#, Some("o2c.clm"));
    let resp = narrow.handle(request("stripe", "payment_intent.succeeded", &body, &stripe_signed(&body, "whsec_live", now), false)).await;
    assert_eq!(status(&resp), (403, "AccessDeniedException".to_owned()));
    assert!(stage.drain("CashApplicationQueue").await.is_empty(), "nothing was published");

    // And right after, a valid one is accepted.
    let resp = f.handle(request("stripe", "payment_intent.succeeded", &body, &stripe_signed(&body, "whsec_live", now), false)).await;
    assert_eq!(resp.status_code, 200);
    assert_eq!(stage.drain("CashApplicationQueue").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_signed_webhook_cannot_be_mapped_should_answer_every_path_and_park_it_without_its_secrets() {
    let stage = Stage::new().await;
    let f = stage.function(r#"{"stripe": "whsec_live"}"#, None);
    let now = SystemClock.now().timestamp();
    let mut doc: Value = serde_json::from_slice(&example("stripe/payment_intent.succeeded")).unwrap();
    doc["data"]["object"]["status"] = json!("requires_payment_method");
    doc["data"]["object"]["metadata"].as_object_mut().unwrap().remove("o2c_legal_entity_id");
    doc["data"]["object"]["client_secret"] = json!("pi_3Q_secret_do_not_keep");
    let body = serde_json::to_vec(&doc).unwrap();
    let resp = f.handle(request("stripe", "payment_intent.succeeded", &body, &stripe_signed(&body, "whsec_live", now), false)).await;
    let answer = json_of(&resp);
    assert_eq!((resp.status_code, answer["ErrorCode"].as_str()), (422, Some("UnmappablePayload")), "{answer}");
    let fields: Vec<&str> = answer["Issues"].as_array().unwrap().iter().map(|i| i["field"].as_str().unwrap()).collect();
    assert!(fields.iter().any(|f| f.starts_with("require")), "{fields:?}");
    let parked = stage.store().rejections(50).await.unwrap();
    let row = parked.iter().find(|r| r.step == "ingest:stripe/payment_intent.succeeded").expect("parked in the state table");
    assert!(!row.body.contains("pi_3Q_secret_do_not_keep"), "the client secret is redacted");
    assert!(row.reasons.iter().all(|r| r.code == "unmappable"));
    assert!(stage.drain("CashApplicationQueue").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_system_posts_a_vendor_payload_with_aws_credentials_should_map_it_without_a_vendor_signature_and_fail_closed_without_an_identity()
 {
    let stage = Stage::new().await;
    // No webhook secret at all: the IAM route needs none.
    let f = stage.function("", None);
    let flow = "arn:aws:sts::123456789012:assumed-role/o2c-netsuite-flow/flow-7";

    // NetSuite's invoice record from the firm's integration flow → ErpInvoicePosted on the
    // reconciliation queue.
    let body = example("netsuite/invoice");
    let resp = f.handle(iam_request("netsuite", "invoice", &body, Some(flow))).await;
    let answer = json_of(&resp);
    assert_eq!((resp.status_code, answer["FailedEntryCount"].as_u64()), (200, Some(0)), "{answer}");
    let delivered = stage.drain("ReconciliationQueue").await;
    let reported: Vec<&Value> = delivered.iter().filter(|e| e["detail-type"] == "ErpInvoicePosted").collect();
    assert_eq!(reported.len(), 1, "{delivered:?}");
    assert_eq!(
        (reported[0]["source"].as_str(), reported[0]["detail"]["payload"]["number"].as_str()),
        (Some("o2c.erp"), Some("INV-MAN-0917"))
    );
    // The shipped sample of that request (what `scripts/lambda_smoke.sh` sends the bootstrap).
    let shipped: ApiGatewayV2httpRequest =
        serde_json::from_str(&std::fs::read_to_string(repo().join("events/apigw/ingest.netsuite.invoice.json")).unwrap()).unwrap();
    let resp = f.handle(shipped).await;
    assert_eq!(resp.status_code, 200, "{}", json_of(&resp));
    assert_eq!(stage.drain("ReconciliationQueue").await.iter().filter(|e| e["detail-type"] == "ErpInvoicePosted").count(), 1);
    // S/4HANA's billing document, the same way.
    let resp = f.handle(iam_request("s4hana", "billing-document", &example("s4hana/billing-document"), Some(flow))).await;
    assert_eq!(resp.status_code, 200, "{}", json_of(&resp));
    assert_eq!(stage.drain("ReconciliationQueue").await.iter().filter(|e| e["detail-type"] == "ErpInvoicePosted").count(), 1);

    // Without the identity API Gateway adds (the route deployed without its authorizer):
    // refused, nothing published.
    let resp = f.handle(iam_request("netsuite", "invoice", &body, None)).await;
    assert_eq!((resp.status_code, json_of(&resp)["ErrorCode"].as_str()), (401, Some("MissingAuthenticationToken")));
    // The webhook route still takes only signing vendors: NetSuite cannot come in unsigned.
    let resp = f.handle(request("netsuite", "invoice", &body, &[], false)).await;
    assert_eq!(resp.status_code, 404, "{}", json_of(&resp));
    // A function that may not publish ERP events refuses them on this route too.
    let crm_only = stage.function("", Some("o2c.crm"));
    let resp = crm_only.handle(iam_request("netsuite", "invoice", &body, Some(flow))).await;
    assert_eq!((resp.status_code, json_of(&resp)["ErrorCode"].as_str()), (403, Some("AccessDeniedException")));
    // Unmappable: 422 with its paths, parked, as on the webhook route.
    let mut bad: Value = serde_json::from_slice(&body).unwrap();
    bad.as_object_mut().unwrap().remove("custbody_o2c_engagement_id");
    let resp = f.handle(iam_request("netsuite", "invoice", bad.to_string().as_bytes(), Some(flow))).await;
    assert_eq!(resp.status_code, 422, "{}", json_of(&resp));
    let parked = stage.store().rejections(10).await.unwrap();
    assert!(parked.iter().any(|r| r.step == "ingest:netsuite/invoice"), "{parked:?}");
    assert!(stage.drain("ReconciliationQueue").await.is_empty(), "nothing published by the refusals");
}

async fn post_to(f: &Ingest, body: &str, caller: &str) -> ApiGatewayV2httpResponse {
    f.handle(iam_request("netsuite", "invoice", body.as_bytes(), Some(caller))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_mapping_is_published_to_the_stage_should_take_over_without_a_rebuild_and_a_broken_one_should_leave_the_last_good_in_force()
{
    let stage = Stage::new().await;
    let compiled = mapping_files();
    let live = stage.function("", None).with_published_mappings(std::time::Duration::ZERO);
    let flow = "arn:aws:sts::123456789012:assumed-role/o2c-netsuite-flow/flow-7";
    // A new French subsidiary (internal id 9): the compiled-in value map does not know it.
    let mut doc: Value = serde_json::from_slice(&example("netsuite/invoice")).unwrap();
    doc["subsidiary"] = json!({"id": "9", "refName": "Northwind Partners SAS"});
    let body = doc.to_string();
    let resp = post_to(&live, &body, flow).await;
    assert_eq!(resp.status_code, 422, "{}", json_of(&resp));

    // The integrator publishes version 2 with the subsidiary: in force from the next request.
    let original = &compiled.iter().find(|(n, _)| n == "netsuite/invoice").unwrap().1;
    let v2 = original.replace("version: 1", "version: 2").replace("    \"5\": LE-SG-01\n", "    \"5\": LE-SG-01\n    \"9\": LE-DE-01\n");
    assert!(v2.contains("version: 2\n") && v2.contains("\"9\": LE-DE-01"), "{v2}");
    let store = stage.store();
    store.put_mappings(&[("netsuite/invoice".to_owned(), v2)], "U-INT-01", SystemClock.now()).await.unwrap();
    let resp = post_to(&live, &body, flow).await;
    let answer = json_of(&resp);
    assert_eq!((resp.status_code, answer["Version"].as_u64()), (200, Some(2)), "{answer}");
    assert_eq!(live.mappings().await.mappings["netsuite/invoice"].version, 2);
    // Every other mapping is still the compiled-in one.
    assert_eq!(live.mappings().await.mappings.len(), compiled.len());

    // A broken publication (not YAML; a file named for another mapping) leaves version 2 in force.
    store.put_mappings(&[("netsuite/invoice".to_owned(), "mapping: [".to_owned())], "U-INT-01", SystemClock.now()).await.unwrap();
    let resp = post_to(&live, &body, flow).await;
    assert_eq!((resp.status_code, json_of(&resp)["Version"].as_u64()), (200, Some(2)), "the last good set stays");
    store
        .put_mappings(
            &[("netsuite/invoice".to_owned(), original.replace("mapping: netsuite/invoice", "mapping: sap/invoice"))],
            "U-INT-01",
            SystemClock.now(),
        )
        .await
        .unwrap();
    assert_eq!(json_of(&post_to(&live, &body, flow).await)["Version"].as_u64(), Some(2));

    // A published file no newer than the deployed one is not taken (a deployment that bumps
    // the version wins again): version 1 published → the compiled version 1 is in force.
    store.put_mappings(&[("netsuite/invoice".to_owned(), original.clone())], "U-INT-01", SystemClock.now()).await.unwrap();
    assert_eq!(post_to(&live, &body, flow).await.status_code, 422);
    assert_eq!(live.mappings().await.mappings["netsuite/invoice"].version, 1);

    // A function with only its compiled-in set never sees the table.
    let compiled_only = stage.function("", None);
    assert_eq!(post_to(&compiled_only, &body, flow).await.status_code, 422);
    stage.drain("ReconciliationQueue").await;
}
