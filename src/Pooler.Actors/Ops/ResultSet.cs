using System.Globalization;
using Pooler.Actors.Protocol;

namespace Pooler.Actors.Ops;

/// <summary>PostgreSQL types the admin console answers with (PgBouncer uses the same few).</summary>
public enum PgType
{
    Text = 25,
    Int4 = 23,
    Int8 = 20,
    Numeric = 1700,
}

/// <summary>
/// A console result as PgBouncer sends it: RowDescription (text format, no table), DataRows, and
/// CommandComplete with a bare tag. Values are rendered as text; null is SQL NULL.
/// </summary>
public sealed class ResultSet(params (string Name, PgType Type)[] columns)
{
    private readonly List<object?[]> _rows = new();

    public IReadOnlyList<(string Name, PgType Type)> Columns { get; } = columns;
    public IReadOnlyList<object?[]> Rows => _rows;

    public ResultSet Add(params object?[] row)
    {
        if (row.Length != Columns.Count) throw new ArgumentException($"row has {row.Length} values for {Columns.Count} columns");
        _rows.Add(row);
        return this;
    }

    public static string Text(object? v) => v switch
    {
        null => "",
        bool b => b ? "1" : "0",
        DateTime t => t.ToString("yyyy-MM-dd HH:mm:ss 'UTC'", CultureInfo.InvariantCulture),
        double d => d.ToString("0.###", CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    public void WriteTo(PgWriter w, string tag = "SHOW")
    {
        w.Begin(MsgType.RowDescription).Int16((short)Columns.Count);
        foreach (var (name, type) in Columns)
            w.CString(name).Int32(0).Int16(0).Int32((int)type).Int16(type switch { PgType.Int4 => 4, PgType.Int8 => 8, _ => -1 }).Int32(-1).Int16(0);
        w.End();
        foreach (var row in _rows)
        {
            w.Begin(MsgType.DataRow).Int16((short)row.Length);
            foreach (var v in row)
            {
                if (v == null) { w.Int32(-1); continue; }
                var bytes = System.Text.Encoding.UTF8.GetBytes(Text(v));
                w.Int32(bytes.Length).Bytes(bytes);
            }
            w.End();
        }
        CommandComplete(w, tag);
    }

    public static void CommandComplete(PgWriter w, string tag) => w.Begin(MsgType.CommandComplete).CString(tag).End();
}
