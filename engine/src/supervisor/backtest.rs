//! A backtest over the API: two submitted versions of a graph run on a recorded file inside
//! the server's read roots, their outputs in a scratch directory of the engine's data dir, and
//! the keyed diff of their outputs (see [`crate::diff`]). Bounded like anything a key can ask
//! for: the input's size, each run's time, one backtest at a time.

use crate::diff::{backtest, Backtest, BacktestLimits, Version};

use super::*;

impl Supervisor {
    /// Backtests `graph` v`old` against v`new` on `input` (a file in the read roots).
    pub fn backtest(
        &self,
        graph: &str,
        (old, new): (i64, i64),
        input: &str,
        samples: usize,
    ) -> Result<Backtest, CommandError> {
        let refuse = |r: Refusal| CommandError::Refused(r);
        let tomls = {
            let inner = self.lock();
            let toml = |v: i64| {
                inner
                    .state
                    .graph_version(graph, v)
                    .map(|g| g.toml.clone())
                    .ok_or_else(|| {
                        refuse(Refusal::NotFound(format!(
                            "graph `{graph}` has no version {v}"
                        )))
                    })
            };
            (toml(old)?, toml(new)?)
        };
        let input = self
            .policy
            .readable(input)
            .map_err(|e| refuse(Refusal::Invalid(format!("input: {e}"))))?;
        let size = std::fs::metadata(&input).map_or(0, |m| m.len());
        let most = self.config.backtest_max_input_bytes;
        if size > most {
            return Err(refuse(Refusal::Invalid(format!(
                "input: {size} bytes is more than this server backtests ({most}, \
                 `backtest_max_input_bytes`)"
            ))));
        }
        let Ok(_one) = self.backtest_lock.try_lock() else {
            return Err(refuse(Refusal::Conflict(
                "a backtest is already running; try again when it is done".into(),
            )));
        };
        let scratch = self.config.data_dir.join("backtests");
        std::fs::create_dir_all(&scratch)
            .map_err(|e| CommandError::Internal(format!("{}: {e}", scratch.display())))?;
        let out = tempfile::tempdir_in(&scratch)
            .map_err(|e| CommandError::Internal(format!("{}: {e}", scratch.display())))?;
        let names = (format!("{graph} v{old}"), format!("{graph} v{new}"));
        let limits = BacktestLimits {
            workers: self.config.workers,
            samples,
            timeout: Some(self.config.backtest_timeout),
        };
        backtest(
            (
                Version {
                    toml: &tomls.0,
                    file: &names.0,
                },
                Version {
                    toml: &tomls.1,
                    file: &names.1,
                },
            ),
            &input,
            out.path(),
            &limits,
            &self.policy,
        )
        .map_err(|e| refuse(Refusal::Invalid(e.to_string())))
    }
}
