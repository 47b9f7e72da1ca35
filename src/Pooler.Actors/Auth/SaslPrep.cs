using System.Text;

namespace Pooler.Actors.Auth;

/// <summary>
/// Password normalization for SCRAM (RFC 4013 SASLprep), reduced to what PostgreSQL does in practice.
/// </summary>
/// <remarks>
/// PostgreSQL's pg_saslprep returns a pure-ASCII password unchanged, byte for byte, so for ASCII we
/// match it exactly. For non-ASCII it runs full SASLprep (mapping, NFKC, prohibited and unassigned
/// code points, bidi rules) and, when that fails, falls back to the raw UTF-8 bytes. We always use the
/// raw UTF-8 bytes for non-ASCII: identical to PostgreSQL whenever prep fails or would change nothing
/// (e.g. ordinary NFC text), and different only for passwords that SASLprep would actually rewrite
/// (non-ASCII spaces, soft hyphens, compatibility characters such as full-width letters).
/// </remarks>
internal static class SaslPrep
{
    public static byte[] Normalize(string password) => Encoding.UTF8.GetBytes(password);
}
