//! `enrich`: joins normalized ticks with instrument reference data by symbol.
//!
//! ```toml
//! [operators.enrich]
//! type = "enrich"
//! input = "normalize"
//! reference = "examples/data/instruments.csv"
//! ```

use rustc_hash::FxHashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::record::{DeadLetter, DeadLetterReason, EnrichedTick, Instrument, Tick};
use crate::OperatorError;
use tickflow_state::{codec, StateError, TableDescriptor};

/// Configuration of an `enrich` operator (besides `type` and `input`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// CSV file with a header; `symbol` and `instrument_id` columns are required and every
    /// other column is copied onto enriched ticks.
    pub reference: String,
}

/// The state tables an `enrich` operator keeps: the reference data a data directory was
/// created with, so a resumed run joins with the same instruments as the run it continues.
pub const TABLES: &[TableDescriptor] = &[TableDescriptor {
    name: "reference",
    description: "instruments by normalized symbol, as loaded when the data dir was created",
}];

/// Instruments by normalized symbol.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReferenceData {
    by_symbol: FxHashMap<String, Arc<Instrument>>,
}

impl ReferenceData {
    /// Builds reference data from a CSV header and its rows (each with its 1-based line number).
    /// Symbols are normalized like tick symbols (trimmed, uppercased). Every problem is reported,
    /// each naming `file` and line.
    pub fn from_rows(
        file: &str,
        header: &[String],
        rows: &[(u64, Vec<String>)],
    ) -> Result<Self, Vec<OperatorError>> {
        let err = |line, message: String| OperatorError::Reference {
            file: file.to_string(),
            line,
            message,
        };
        let col = |name: &str| header.iter().position(|h| h.trim() == name);
        let (Some(sym_col), Some(id_col)) = (col("symbol"), col("instrument_id")) else {
            return Err(vec![err(
                1,
                format!(
                    "header must have `symbol` and `instrument_id` columns, found {:?}",
                    header
                ),
            )]);
        };
        let mut errors = Vec::new();
        let mut by_symbol = FxHashMap::default();
        for (line, row) in rows {
            let symbol = row.get(sym_col).map(|s| s.trim().to_uppercase());
            let id = row.get(id_col).map(|s| s.trim().to_string());
            let (Some(symbol), Some(id)) = (symbol, id) else {
                errors.push(err(*line, "row has fewer columns than the header".into()));
                continue;
            };
            if symbol.is_empty() || id.is_empty() {
                errors.push(err(
                    *line,
                    "`symbol` and `instrument_id` must not be empty".into(),
                ));
                continue;
            }
            let attributes = header
                .iter()
                .zip(row)
                .enumerate()
                .filter(|(i, _)| *i != sym_col && *i != id_col)
                .map(|(_, (h, v))| (h.trim().to_string(), v.clone()))
                .collect();
            let instrument = Arc::new(Instrument {
                instrument_id: id.into(),
                symbol: symbol.clone(),
                attributes,
            });
            if by_symbol.insert(symbol.clone(), instrument).is_some() {
                errors.push(err(*line, format!("symbol {symbol} is listed twice")));
            }
        }
        if errors.is_empty() {
            Ok(ReferenceData { by_symbol })
        } else {
            Err(errors)
        }
    }

    /// The instruments as stored entries: key the symbol, value the encoded instrument, in
    /// symbol order.
    pub fn to_entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = self
            .by_symbol
            .iter()
            .filter_map(|(sym, i)| Some((sym.as_bytes().to_vec(), codec::encode(&**i).ok()?)))
            .collect();
        out.sort();
        out
    }

    /// Reference data from entries written by [`ReferenceData::to_entries`].
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Self, StateError> {
        let mut by_symbol = FxHashMap::default();
        for (k, v) in entries {
            let symbol = std::str::from_utf8(k)
                .map_err(|_| StateError::Corrupt("reference symbol is not UTF-8".into()))?;
            let instrument: Instrument = codec::decode(v)?;
            by_symbol.insert(symbol.to_string(), Arc::new(instrument));
        }
        Ok(ReferenceData { by_symbol })
    }

    /// Number of instruments.
    pub fn len(&self) -> usize {
        self.by_symbol.len()
    }

    /// Whether there are no instruments.
    pub fn is_empty(&self) -> bool {
        self.by_symbol.is_empty()
    }

    /// The instrument listed under a normalized symbol.
    pub fn lookup(&self, symbol: &str) -> Option<&Arc<Instrument>> {
        self.by_symbol.get(symbol)
    }

    /// Joins one tick with its instrument, or dead-letters it as `unknown_instrument`.
    pub fn enrich(&self, tick: Tick) -> Result<EnrichedTick, DeadLetter> {
        match self.by_symbol.get(&*tick.symbol) {
            // Joined, the tick can no longer be dead-lettered: its raw line (kept for that) is
            // dropped here rather than carried through the window's exchange (across
            // processes in a cluster, where it was most of the bytes).
            Some(instrument) => Ok(EnrichedTick {
                tick: Tick {
                    raw: String::new(),
                    ..tick
                },
                instrument: Arc::clone(instrument),
            }),
            None => Err(DeadLetter {
                reason: DeadLetterReason::UnknownInstrument,
                message: format!("symbol {} is not in the reference data", tick.symbol),
                ordinal: tick.ordinal,
                raw: tick.raw,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Ordinal;
    use rust_decimal::Decimal;

    fn header() -> Vec<String> {
        ["symbol", "instrument_id", "asset_class", "sector"]
            .map(String::from)
            .to_vec()
    }

    fn row(cells: &[&str]) -> Vec<String> {
        cells.iter().map(|s| s.to_string()).collect()
    }

    fn tick(symbol: &str) -> Tick {
        Tick {
            venue: "V".into(),
            symbol: symbol.into(),
            ts_ns: 0,
            price: Decimal::ONE,
            size: Decimal::ONE,
            seq: 1,
            ordinal: Ordinal { source: 0, line: 9 },
            raw: "{raw}".into(),
        }
    }

    #[test]
    fn enriches_and_copies_other_columns() {
        let rows = vec![(2, row(&[" aapl", "INS-1", "equity", "tech"]))];
        let r = ReferenceData::from_rows("ref.csv", &header(), &rows).unwrap();
        let e = r.enrich(tick("AAPL")).unwrap();
        assert_eq!(&*e.instrument.instrument_id, "INS-1");
        // Joined, it can no longer be dead-lettered: its raw line is not carried on.
        assert_eq!(e.tick.raw, "");
        assert_eq!((e.tick.seq, e.tick.ordinal.line), (1, 9));
        assert_eq!(
            e.instrument.attributes,
            vec![
                ("asset_class".to_string(), "equity".to_string()),
                ("sector".to_string(), "tech".to_string())
            ]
        );
    }

    #[test]
    fn unknown_symbol_is_dead_lettered() {
        let r = ReferenceData::from_rows("ref.csv", &header(), &[]).unwrap();
        let dl = r.enrich(tick("ZZZ")).unwrap_err();
        assert_eq!(dl.reason, DeadLetterReason::UnknownInstrument);
        assert_eq!(dl.raw, "{raw}");
        assert_eq!(dl.ordinal.line, 9);
    }

    #[test]
    fn bad_reference_rows_name_file_and_line() {
        let rows = vec![
            (2, row(&["A", "1", "x", "y"])),
            (3, row(&["A", "2", "x", "y"])),
            (4, row(&["B"])),
            (5, row(&["", "3", "x", "y"])),
        ];
        let errs = ReferenceData::from_rows("ref.csv", &header(), &rows).unwrap_err();
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].starts_with("ref.csv:3:"), "{text:?}");
        assert!(text[1].starts_with("ref.csv:4:"), "{text:?}");
        assert!(text[2].starts_with("ref.csv:5:"), "{text:?}");
        let errs = ReferenceData::from_rows("ref.csv", &row(&["sym", "id"]), &[]).unwrap_err();
        assert!(errs[0].to_string().contains("instrument_id"));
    }
}
