//! What the AWS providers share: the SDK's configuration, API errors with
//! their causes, waiting for a resource to reach a state, the tags a
//! snapshot carries, waiting for a new snapshot, and deleting one. Each
//! provider keeps only its own API calls and what it checks.

use std::time::Duration;

use super::SnapshotError;
#[cfg(feature = "aws")]
use super::{Member, SnapContext};
#[cfg(feature = "aws")]
use crate::error::error_chain;

/// The SDK configured as for AWS: region, the default credential chain,
/// standard retries (throttling included), and an optional endpoint.
#[cfg(feature = "aws")]
pub async fn sdk_config(region: &str, endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(5));
    if let Some(e) = endpoint {
        loader = loader.endpoint_url(e);
    }
    loader.load().await
}

/// An AWS API error with its whole chain of causes (codes and messages;
/// requests' credentials are never part of them).
#[cfg(feature = "aws")]
pub fn api_error(op: &'static str, e: &(dyn std::error::Error + 'static)) -> SnapshotError {
    SnapshotError::Api {
        op,
        message: error_chain(e),
    }
}

/// Polls `check` every `interval` until it gives a value or fails, or until
/// `timeout` has passed: then the error says `{what} after {timeout}`.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> Result<T, SnapshotError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, SnapshotError>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SnapshotError::TimedOut {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(interval).await;
    }
}

/// The tags every snapshot drp takes carries: the host, the change and
/// its reason.
#[cfg(feature = "aws")]
pub fn snapshot_tags<'a>(ctx: &'a SnapContext<'a>) -> [(&'static str, &'a str); 3] {
    [
        ("drp:host", &ctx.policy.host),
        ("drp:change", ctx.change),
        ("drp:reason", ctx.reason),
    ]
}

/// How far a new snapshot is, as its provider's API reports it.
#[cfg(feature = "aws")]
pub enum Progress {
    Done,
    Failed,
    Pending,
}

/// Polls `progress` every `interval` until the snapshot is done. When it
/// fails the error says `{snapshot} failed`; when it takes longer than
/// `timeout`, `{snapshot} not {done} after {timeout}`.
#[cfg(feature = "aws")]
pub async fn wait_for_snapshot<F, Fut>(
    snapshot: &str,
    done: &str,
    timeout: Duration,
    interval: Duration,
    mut progress: F,
) -> Result<(), SnapshotError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Progress, SnapshotError>>,
{
    wait_until(&format!("{snapshot} not {done}"), timeout, interval, || {
        let p = progress();
        async move {
            match p.await? {
                Progress::Done => Ok(Some(())),
                Progress::Failed => Err(SnapshotError::failed(format!("{snapshot} failed"))),
                Progress::Pending => Ok(None),
            }
        }
    })
    .await
}

/// Deletes a member's snapshot (expiry) through `call`, the provider's API
/// operation `op`, given the snapshot's id. A member that was never taken
/// has nothing to delete.
#[cfg(feature = "aws")]
pub async fn delete_snapshot<F, Fut, T, E>(
    member: &Member,
    op: &'static str,
    call: F,
) -> Result<(), SnapshotError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let Some(id) = member.reference.clone() else {
        return Ok(());
    };
    call(id).await.map(|_| ()).map_err(|e| api_error(op, &e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{SnapshotError, wait_until};

    #[tokio::test]
    async fn a_snapshot_that_never_completes_times_out_with_a_clear_error() {
        let err = wait_until::<(), _, _>(
            "snapshot snap-1 of vol-1 not completed",
            Duration::from_millis(300),
            Duration::from_millis(50),
            || async { Ok(None) },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot snap-1 of vol-1 not completed after 300ms"
        );
    }

    #[tokio::test]
    async fn waiting_stops_at_the_first_answer_or_failure() {
        let mut n = 0;
        let v = wait_until(
            "x",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                n += 1;
                let done = n >= 3;
                async move { Ok(done.then_some(n)) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = wait_until::<(), _, _>(
            "x",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || async { Err(SnapshotError::failed("snapshot failed")) },
        )
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "snapshot failed");
    }

    #[cfg(feature = "aws")]
    #[tokio::test]
    async fn a_new_snapshot_is_waited_for_until_done_failed_or_too_late() {
        use super::{Progress, wait_for_snapshot};
        let wait = |answers: Vec<Progress>| {
            let mut answers = answers.into_iter();
            wait_for_snapshot(
                "DB snapshot s-1",
                "available",
                Duration::from_millis(200),
                Duration::from_millis(1),
                move || {
                    let p = answers.next().unwrap_or(Progress::Pending);
                    async move { Ok(p) }
                },
            )
        };
        wait(vec![Progress::Pending, Progress::Done]).await.unwrap();
        let failed = wait(vec![Progress::Pending, Progress::Failed]).await;
        assert_eq!(failed.unwrap_err().to_string(), "DB snapshot s-1 failed");
        let late = wait(Vec::new()).await;
        assert_eq!(
            late.unwrap_err().to_string(),
            "DB snapshot s-1 not available after 200ms"
        );
    }
}
