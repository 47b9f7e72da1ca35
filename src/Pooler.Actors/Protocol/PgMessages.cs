using System.Text;

namespace Pooler.Actors.Protocol;

/// <summary>Message type bytes of protocol 3.0 that the pooler looks at.</summary>
public static class MsgType
{
    // frontend
    public const byte Query = (byte)'Q', Parse = (byte)'P', Bind = (byte)'B', Describe = (byte)'D', Execute = (byte)'E',
        Sync = (byte)'S', Flush = (byte)'H', Close = (byte)'C', FunctionCall = (byte)'F', Terminate = (byte)'X',
        CopyData = (byte)'d', CopyDone = (byte)'c', CopyFail = (byte)'f', Password = (byte)'p';
    // backend
    public const byte Authentication = (byte)'R', ParameterStatus = (byte)'S', BackendKeyData = (byte)'K',
        ReadyForQuery = (byte)'Z', ErrorResponse = (byte)'E', NoticeResponse = (byte)'N', CommandComplete = (byte)'C',
        CopyInResponse = (byte)'G', CopyOutResponse = (byte)'H', CopyBothResponse = (byte)'W',
        RowDescription = (byte)'T', DataRow = (byte)'D',
        ParseComplete = (byte)'1', BindComplete = (byte)'2', CloseComplete = (byte)'3';
}

/// <summary>Codes carried in the first Int32 of an untyped startup-phase packet.</summary>
public static class StartupCode
{
    public const int Protocol30 = 196608;      // 3 << 16
    public const int CancelRequest = 80877102;
    public const int SslRequest = 80877103;
    public const int GssEncRequest = 80877104;
}

/// <summary>Builders for the messages the pooler writes itself.</summary>
public static class PgMessages
{
    public static byte[] Error(string severity, string sqlState, string message, string? detail = null, string? hint = null)
    {
        var w = new PgWriter(64 + message.Length);
        AppendError(w, MsgType.ErrorResponse, severity, sqlState, message, detail, hint);
        return w.ToArray();
    }

    public static byte[] Notice(string message, string sqlState = "00000")
    {
        var w = new PgWriter(64 + message.Length);
        AppendError(w, MsgType.NoticeResponse, "NOTICE", sqlState, message, null, null);
        return w.ToArray();
    }

    public static void AppendError(PgWriter w, byte type, string severity, string sqlState, string message, string? detail, string? hint)
    {
        w.Begin(type)
            .Byte((byte)'S').CString(severity)
            .Byte((byte)'V').CString(severity)
            .Byte((byte)'C').CString(sqlState)
            .Byte((byte)'M').CString(message);
        if (detail != null) w.Byte((byte)'D').CString(detail);
        if (hint != null) w.Byte((byte)'H').CString(hint);
        w.Byte(0).End();
    }

    public static byte[] ReadyForQuery(byte status) => [MsgType.ReadyForQuery, 0, 0, 0, 5, status];

    public static void AppendAuth(PgWriter w, int code, ReadOnlySpan<byte> extra)
        => w.Begin(MsgType.Authentication).Int32(code).Bytes(extra).End();

    public static void AppendParameterStatus(PgWriter w, string name, string value)
        => w.Begin(MsgType.ParameterStatus).CString(name).CString(value).End();

    public static void AppendBackendKeyData(PgWriter w, int pid, int secret)
        => w.Begin(MsgType.BackendKeyData).Int32(pid).Int32(secret).End();

    public static byte[] AuthMd5(ReadOnlySpan<byte> salt)
    {
        var w = new PgWriter(16);
        AppendAuth(w, 5, salt);
        return w.ToArray();
    }

    public static byte[] AuthCleartext()
    {
        var w = new PgWriter(16);
        AppendAuth(w, 3, default);
        return w.ToArray();
    }

    public static byte[] AuthSasl(string mechanism)
    {
        var w = new PgWriter(32);
        w.Begin(MsgType.Authentication).Int32(10).CString(mechanism).Byte(0).End();
        return w.ToArray();
    }

    public static byte[] AuthSaslContinue(string data) => AuthWithData(11, data);
    public static byte[] AuthSaslFinal(string data) => AuthWithData(12, data);

    private static byte[] AuthWithData(int code, string data)
    {
        var w = new PgWriter(16 + data.Length);
        AppendAuth(w, code, Encoding.UTF8.GetBytes(data));
        return w.ToArray();
    }

    // ---- frontend messages (the pooler as a client of PostgreSQL) ----

    public static byte[] Startup(IEnumerable<KeyValuePair<string, string>> parameters)
    {
        var w = new PgWriter(128);
        w.BeginUntyped().Int32(StartupCode.Protocol30);
        foreach (var (k, v) in parameters) w.CString(k).CString(v);
        w.Byte(0).End();
        return w.ToArray();
    }

    public static byte[] Query(string sql)
    {
        var w = new PgWriter(8 + sql.Length);
        w.Begin(MsgType.Query).CString(sql).End();
        return w.ToArray();
    }

    public static byte[] Password(string password)
    {
        var w = new PgWriter(8 + password.Length);
        w.Begin(MsgType.Password).CString(password).End();
        return w.ToArray();
    }

    public static byte[] SaslInitialResponse(string mechanism, string data)
    {
        var bytes = Encoding.UTF8.GetBytes(data);
        var w = new PgWriter(16 + bytes.Length);
        w.Begin(MsgType.Password).CString(mechanism).Int32(bytes.Length).Bytes(bytes).End();
        return w.ToArray();
    }

    public static byte[] SaslResponse(string data)
    {
        var bytes = Encoding.UTF8.GetBytes(data);
        var w = new PgWriter(8 + bytes.Length);
        w.Begin(MsgType.Password).Bytes(bytes).End();
        return w.ToArray();
    }

    public static byte[] CancelRequest(int pid, int secret)
    {
        var w = new PgWriter(16);
        w.BeginUntyped().Int32(StartupCode.CancelRequest).Int32(pid).Int32(secret).End();
        return w.ToArray();
    }

    public static readonly byte[] Terminate = [MsgType.Terminate, 0, 0, 0, 4];

    /// <summary>SSLRequest: length 8, code 80877103.</summary>
    public static readonly byte[] SslRequest = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
}
