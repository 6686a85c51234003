//! Reference data: one item per entity, loaded as a snapshot and cached per process.

use super::*;

impl DynamoStore {
    /// Loads a whole reference-data snapshot (`PK = REF#<kind>` partitions).
    pub async fn load_reference(&self) -> Result<ReferenceData, O2cError> {
        let mut data = serde_json::Map::new();
        for kind in ReferenceData::SECTIONS {
            let mut map = serde_json::Map::new();
            for item in self.query_all(&format!("REF#{kind}"), None).await? {
                let id = get_s(&item, "SK").unwrap_or_default().to_owned();
                let body = get_s(&item, "body").unwrap_or("null");
                map.insert(id, from_json(body).map_err(|e| O2cError::Bug(format!("reference {kind}: {e}")))?);
            }
            data.insert(kind.into(), serde_json::Value::Object(map));
        }
        let workflow = self.query_all("REF#workflow", None).await?;
        let wf = workflow.first().and_then(|i| get_s(i, "body")).unwrap_or("{}");
        data.insert("workflow".into(), from_json(wf).map_err(|e| O2cError::Bug(format!("reference workflow: {e}")))?);
        ReferenceData::from_value(&serde_json::Value::Object(data)).map_err(|e| O2cError::dependency("reference-data", e.to_string()))
    }

    /// Writes a reference-data snapshot (one item per entity, `BatchWriteItem` in 25s).
    pub async fn put_reference(&self, data: &ReferenceData) -> Result<usize, O2cError> {
        let v = serde_json::to_value(data).map_err(|e| O2cError::Bug(e.to_string()))?;
        let mut requests = Vec::new();
        for (kind, entities) in v.as_object().into_iter().flatten() {
            if kind == "workflow" {
                requests.push((format!("REF#{kind}"), "rules".to_owned(), entities.to_string()));
                continue;
            }
            for (id, body) in entities.as_object().into_iter().flatten() {
                requests.push((format!("REF#{kind}"), id.clone(), body.to_string()));
            }
        }
        let total = requests.len();
        for chunk in requests.chunks(MAX_BATCH_WRITE) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|(pk, sk, body)| {
                    let item = HashMap::from([
                        ("PK".to_owned(), s(pk.clone())),
                        ("SK".to_owned(), s(sk.clone())),
                        ("body".to_owned(), s(body.clone())),
                    ]);
                    PutRequest::builder().set_item(Some(item)).build().map(|p| WriteRequest::builder().put_request(p).build())
                })
                .collect::<Result<_, _>>()
                .map_err(|e| O2cError::Bug(e.to_string()))?;
            for attempt in 0..8u32 {
                self.counts.write();
                let out = self.client.batch_write_item().request_items(&self.tables.state, pending.clone()).send().await.map_err(dep)?;
                pending = out.unprocessed_items().and_then(|m| m.get(&self.tables.state)).cloned().unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            if !pending.is_empty() {
                return Err(O2cError::dependency("dynamodb", "BatchWriteItem left unprocessed items after retries"));
            }
        }
        Ok(total)
    }
}

/// A snapshot and when it was loaded.
type Cached = (Instant, Arc<ReferenceData>);

/// Reference data read from the state table, cached per process for `ttl`.
#[derive(Clone)]
pub struct DynamoReferenceData {
    store: DynamoStore,
    ttl: Duration,
    cache: Arc<RwLock<Option<Cached>>>,
}

impl DynamoReferenceData {
    /// A cached source over `store`.
    pub fn new(store: DynamoStore, ttl: Duration) -> Self {
        Self { store, ttl, cache: Arc::new(RwLock::new(None)) }
    }
}

impl ReferenceDataSource for DynamoReferenceData {
    async fn snapshot(&self) -> Result<Arc<ReferenceData>, O2cError> {
        if let Some((at, data)) = self.cache.read().await.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(data.clone());
        }
        let mut guard = self.cache.write().await;
        if let Some((at, data)) = guard.as_ref()
            && at.elapsed() < self.ttl
        {
            return Ok(data.clone());
        }
        let fresh = Arc::new(self.store.load_reference().await?);
        *guard = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }
}
