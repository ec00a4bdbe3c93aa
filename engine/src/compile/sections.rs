//! `[graph]` and `[checkpoint]`.

use toml_edit::Table;

use super::*;

impl Compiler<'_> {
    /// `[checkpoint]`: `interval` (event time, default 10s), `retain` (default 3) and
    /// `min_pause` (wall clock between checkpoints, default 1s).
    pub(super) fn checkpoint_section(&mut self, root: &Table) -> CheckpointConfig {
        let mut cfg = CheckpointConfig::default();
        let Some(item) = root.get("checkpoint") else {
            return cfg;
        };
        let Some(table) = item.as_table_like() else {
            let line = self.key_line(root, "checkpoint");
            self.error("checkpoint", line, "must be a table");
            return cfg;
        };
        for (key, value) in table.iter() {
            let line = self.line_at(span_start(
                table.get_key_value(key).and_then(|(k, _)| k.span()),
            ));
            let path = format!("checkpoint.{key}");
            match key {
                "interval" => match value.as_str().map(duration_ms) {
                    Some(Ok(ms)) if ms >= 1 => cfg.interval_ms = ms,
                    Some(Ok(_)) => self.error(path, line, "must be at least 1ms"),
                    Some(Err(msg)) => self.error(path, line, msg),
                    None => self.error(path, line, "must be a duration string such as \"10s\""),
                },
                "retain" => match value.as_integer() {
                    Some(n) if n >= 1 => cfg.retain = n as usize,
                    _ => self.error(path, line, "must be an integer >= 1"),
                },
                "min_pause" => match value.as_str().map(duration_ms) {
                    Some(Ok(ms)) => cfg.min_pause_ms = ms,
                    Some(Err(msg)) => self.error(path, line, msg),
                    None => self.error(path, line, "must be a duration string such as \"50ms\""),
                },
                _ => self.error(
                    path,
                    line,
                    "unknown key; expected `interval`, `retain` or `min_pause`",
                ),
            }
        }
        cfg
    }

    /// `[rollout]`: the version's canary settings (see
    /// [`crate::control::CanarySettings`]), checked as a request's would be.
    pub(super) fn rollout_section(&mut self, root: &Table, values: &toml::Table) {
        let Some(value) = values.get("rollout") else {
            return;
        };
        // The line of `rollout.<key>` (its first part), else of the table.
        let line_of = |this: &Self, key: &str| {
            let at = root
                .get("rollout")
                .and_then(Item::as_table_like)
                .and_then(|t| t.get_key_value(key.split('.').next().unwrap_or(key)))
                .and_then(|(k, _)| k.span());
            this.line_at(span_start(at))
                .or_else(|| this.key_line(root, "rollout"))
        };
        let settings: crate::control::CanarySettings = match value.clone().try_into() {
            Ok(s) => s,
            Err(e) => {
                let message = e.to_string();
                let key = crate::component::config_error_key(&message).unwrap_or_default();
                let line = line_of(self, &key);
                let message = message.lines().next().unwrap_or("").trim();
                let path = match key.as_str() {
                    "" => "rollout".to_string(),
                    k => format!("rollout.{k}"),
                };
                self.error(path, line, message);
                return;
            }
        };
        if let Err(e) = settings.over(&Default::default()).check() {
            let line = line_of(self, &e.key);
            self.error(format!("rollout.{}", e.key), line, e.why);
        }
    }

    pub(super) fn graph_section(&mut self, root: &Table) -> GraphHeader {
        let mut header = GraphHeader {
            name: String::new(),
            version: 1,
            base_currency: DEFAULT_BASE_CURRENCY.to_string(),
            max_out_of_orderness_ms: duration_ms(DEFAULT_MAX_OUT_OF_ORDERNESS).unwrap_or(1_000),
        };
        let Some(graph) = root.get("graph").and_then(Item::as_table) else {
            let line = self.key_line(root, "graph");
            self.error(
                "graph",
                line,
                "a `[graph]` table with `name` and `version` is required",
            );
            return header;
        };
        for (key, item) in graph.iter() {
            let line = self.key_line(graph, key);
            let path = format!("graph.{key}");
            match key {
                "name" => match item.as_str().map(|s| (s, identifier(s, true))) {
                    Some((s, Ok(()))) => header.name = s.to_string(),
                    Some((_, Err(rule))) => self.error(path, line, rule),
                    None => self.error(path, line, "must be a string"),
                },
                "version" => match item.as_integer() {
                    Some(v) if v >= 1 => header.version = v,
                    _ => self.error(path, line, "must be an integer >= 1"),
                },
                "base_currency" => match item.as_str() {
                    Some(s) if !s.trim().is_empty() => header.base_currency = s.trim().to_uppercase(),
                    _ => self.error(path, line, "must be a currency code such as \"USD\""),
                },
                "description" => {
                    if item.as_str().is_none() {
                        self.error(path, line, "must be a string");
                    }
                }
                "defaults" => match item.as_table_like() {
                    Some(defaults) => {
                        for (dkey, ditem) in defaults.iter() {
                            let dpath = format!("graph.defaults.{dkey}");
                            let dline = self.line_at(span_start(
                                defaults.get_key_value(dkey).and_then(|(k, _)| k.span()),
                            ));
                            match (dkey, ditem.as_str()) {
                                ("max_out_of_orderness", Some(text)) => match duration_ms(text) {
                                    Ok(ms) => header.max_out_of_orderness_ms = ms,
                                    Err(msg) => self.error(dpath, dline, msg),
                                },
                                ("max_out_of_orderness", None) => {
                                    self.error(dpath, dline, "must be a duration string such as \"2s\"")
                                }
                                _ => self.error(
                                    dpath,
                                    dline,
                                    "unknown key; expected `max_out_of_orderness`",
                                ),
                            }
                        }
                    }
                    None => self.error(path, line, "must be a table"),
                },
                _ => self.error(
                    path,
                    line,
                    "unknown key; expected `name`, `version`, `base_currency`, `description` or `defaults`",
                ),
            }
        }
        if !graph.contains_key("name") {
            let line = self.key_line(root, "graph");
            self.error("graph.name", line, "missing; every graph needs a name");
        }
        if !graph.contains_key("version") {
            let line = self.key_line(root, "graph");
            self.error(
                "graph.version",
                line,
                "missing; every graph needs a version",
            );
        }
        header
    }
}
