//! How the pipeline language writes Arrow types, for schemas shown to users (`engine graph`).

use arrow::datatypes::DataType;

/// The name of `dt` in the schema language of the TOML pipelines: `int`, `long`, `double`,
/// `string`, `timestamp`, `list<T>`, `struct<name: T, ...>`; other types as Arrow writes them.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Int32 => "int".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Timestamp(_, _) => "timestamp".into(),
        DataType::Date32 => "date".into(),
        DataType::Binary => "binary".into(),
        DataType::List(f) => format!("list<{}>", type_name(f.data_type())),
        DataType::Struct(fs) => format!(
            "struct<{}>",
            fs.iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.data_type())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}
