//! Node tables: names, types, inputs as written, and each node built by its registry entry.

use toml_edit::Table;

use super::*;

impl Compiler<'_> {
    pub(super) fn collect_nodes<'d>(
        &mut self,
        root: &'d Table,
        values: &toml::Table,
    ) -> Vec<RawNode<'d>> {
        let mut nodes = Vec::new();
        let mut seen: HashMap<String, Section> = HashMap::new();
        for section in Section::ALL {
            let Some(item) = root.get(section.key()) else {
                continue;
            };
            let Some(table) = item.as_table() else {
                let line = self.key_line(root, section.key());
                self.error(section.key(), line, "must be a table of named nodes");
                continue;
            };
            for (name, node_item) in table.iter() {
                let line = self.key_line(table, name);
                if let Err(rule) = identifier(name, false) {
                    let shown = format!("{}.\"{}\"", section.key(), name.escape_debug());
                    self.error(shown, line, format!("node name: {rule}"));
                    continue;
                }
                let path = format!("{}.{name}", section.key());
                let Some(node_table) = node_item.as_table() else {
                    self.error(path, line, "must be a table such as `[sources.ticks]`");
                    continue;
                };
                // Sources and operators share one namespace (inputs name them); sinks have their own.
                let clash = if section == Section::Sinks {
                    None
                } else {
                    seen.insert(name.to_string(), section)
                };
                if let Some(other) = clash {
                    self.error(
                        path.clone(),
                        line,
                        format!(
                            "name `{name}` is already used by `{}.{name}`; node names must be unique",
                            other.key()
                        ),
                    );
                }
                let type_name = match node_table.get("type").map(|t| t.as_str()) {
                    Some(Some(t)) => t.to_string(),
                    Some(None) => {
                        let l = self.key_line(node_table, "type");
                        self.error(format!("{path}.type"), l, "must be a string");
                        continue;
                    }
                    None => {
                        self.error(
                            format!("{path}.type"),
                            line,
                            "missing; every node needs a `type`",
                        );
                        continue;
                    }
                };
                let inputs = self.node_inputs(section, &path, node_table, line);
                let node_values = values
                    .get(section.key())
                    .and_then(|s| s.get(name))
                    .and_then(|v| v.as_table())
                    .cloned()
                    .unwrap_or_default();
                nodes.push(RawNode {
                    section,
                    name: name.to_string(),
                    table: node_table,
                    values: node_values,
                    line,
                    type_name,
                    inputs,
                });
            }
        }
        nodes
    }

    fn node_inputs(
        &mut self,
        section: Section,
        path: &str,
        table: &Table,
        line: Option<usize>,
    ) -> Vec<(String, Option<usize>)> {
        let input_line = self.key_line(table, "input");
        match (section, table.get("input")) {
            (Section::Sources, None) => Vec::new(),
            (Section::Sources, Some(_)) => {
                self.error(format!("{path}.input"), input_line, "sources take no input");
                Vec::new()
            }
            (_, None) => {
                self.error(
                    format!("{path}.input"),
                    line,
                    "missing; name the node (or `node.output`) this reads",
                );
                Vec::new()
            }
            (_, Some(item)) => {
                let names: Option<Vec<String>> = if let Some(s) = item.as_str() {
                    Some(vec![s.to_string()])
                } else {
                    item.as_array().and_then(|a| {
                        a.iter()
                            .map(|v| v.as_str().map(String::from))
                            .collect::<Option<Vec<_>>>()
                    })
                };
                match names {
                    Some(names) if !names.is_empty() => {
                        names.into_iter().map(|n| (n, input_line)).collect()
                    }
                    _ => {
                        self.error(
                            format!("{path}.input"),
                            input_line,
                            "must be a node name or a non-empty array of them",
                        );
                        Vec::new()
                    }
                }
            }
        }
    }

    /// Builds one node through its type's registry entry; its problems are reported with
    /// their TOML paths and lines. `None` if the type is unknown or the config invalid.
    pub(super) fn build_node<T>(
        &mut self,
        defaults: &GraphDefaults,
        node: &RawNode,
        known: &[(&'static str, T)],
        build: impl FnOnce(T, &mut BuildCx) -> Option<Built>,
    ) -> Option<Built>
    where
        T: Copy,
    {
        let Some((_, entry)) = known.iter().find(|(n, _)| *n == node.type_name) else {
            let names: Vec<&str> = known.iter().map(|(n, _)| *n).collect();
            let line = self.key_line(node.table, "type");
            let what = match node.section {
                Section::Sources => "source",
                Section::Operators => "operator",
                Section::Sinks => "sink",
            };
            self.error(
                format!("{}.type", node.path()),
                line,
                format!(
                    "unknown {what} type `{}`; known: {}",
                    node.type_name,
                    names.join(", ")
                ),
            );
            return None;
        };
        let mut values = node.values.clone();
        values.remove("type");
        values.remove("input");
        let mut cx = BuildCx::new(defaults, &node.name, node.path(), values, self.policy);
        let built = build(*entry, &mut cx);
        self.files_read.append(&mut cx.files_read);
        let failed = !cx.problems.is_empty();
        for problem in std::mem::take(&mut cx.problems) {
            self.node_problem(node, problem);
        }
        if failed {
            None
        } else {
            built
        }
    }

    /// Reports a node's config problem at its key's line (or the node's).
    fn node_problem(&mut self, node: &RawNode, problem: Problem) {
        let (path, line) = match problem.key {
            Some(key) => {
                let top = key.split('.').next().unwrap_or(&key).to_string();
                let line = self.key_line(node.table, &top).or(node.line);
                (format!("{}.{key}", node.path()), line)
            }
            None => (node.path(), node.line),
        };
        self.error(path, line, problem.message);
    }
}
