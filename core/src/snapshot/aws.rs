//! What the AWS providers share: the SDK's configuration, API errors with
//! their causes, and waiting for a resource to reach a state.

use std::time::Duration;

use super::SnapshotError;

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

/// An error with its whole chain of causes, `: `-separated.
#[cfg(feature = "aws")]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
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
}
