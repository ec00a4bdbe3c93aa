//! Reference data from CSV: a header row, then one row per instrument.

use std::path::Path;

use crate::ConnectorError;

/// A CSV file's header and rows, each row with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvTable {
    /// Column names.
    pub header: Vec<String>,
    /// Rows with their line numbers.
    pub rows: Vec<(u64, Vec<String>)>,
}

/// Reads a CSV file with a header. Rows may have a different number of columns than the header;
/// checking them is the consumer's job, so it can name the line.
pub fn read_csv(path: impl AsRef<Path>) -> Result<CsvTable, ConnectorError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| ConnectorError::io(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(file);
    let csv_err = |e: csv::Error| ConnectorError::Csv {
        path: path.to_path_buf(),
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    };
    let header = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let line = record.position().map_or(0, |p| p.line());
        rows.push((line, record.iter().map(String::from).collect()));
    }
    Ok(CsvTable { header, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_header_and_numbered_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ref.csv");
        std::fs::write(
            &path,
            "symbol,instrument_id,sector\nAAPL,I1,tech\n\"B,C\",I2\n",
        )
        .unwrap();
        let t = read_csv(&path).unwrap();
        assert_eq!(t.header, vec!["symbol", "instrument_id", "sector"]);
        assert_eq!(
            t.rows,
            vec![
                (2, vec!["AAPL".into(), "I1".into(), "tech".into()]),
                (3, vec!["B,C".into(), "I2".into()]),
            ]
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = read_csv("/nonexistent/ref.csv").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ref.csv"));
    }
}
