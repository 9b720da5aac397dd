//! A number every process sharing some Redis keys must agree on (a shard
//! count): the first process records it, the others read what it recorded.

use redis::aio::ConnectionManager;
use redis::RedisResult;

/// `SET key value NX`, then `GET key`: the value the first process
/// recorded (this one's when it was first), `None` when the key holds no
/// number.
pub(crate) async fn record_once(c: &mut ConnectionManager, key: &str, value: u32) -> RedisResult<Option<u32>> {
    let _: Option<String> = redis::cmd("SET").arg(key).arg(value).arg("NX").query_async(c).await?;
    redis::cmd("GET").arg(key).query_async(c).await
}
