using System.Text;

namespace Hypervisor.Protocol.Grpc;

/// <summary>
/// Percent-encoding of the <c>grpc-message</c> value (PROTOCOL-HTTP2.md): the message is UTF-8;
/// bytes 0x20–0x7E other than <c>%</c> (0x25) are sent as they are, every other byte as
/// <c>%</c> followed by two upper-case hex digits.
/// </summary>
public static class GrpcMessageEncoding
{
    /// <summary>Encodes a status message for the <c>grpc-message</c> header.</summary>
    public static string Encode(string message)
    {
        int i = 0;
        while (i < message.Length && IsUnreserved(message[i]))
            i++;
        if (i == message.Length)
            return message;

        byte[] utf8 = Encoding.UTF8.GetBytes(message);
        var sb = new StringBuilder(utf8.Length * 3);
        foreach (byte b in utf8)
        {
            if (IsUnreserved((char)b))
            {
                sb.Append((char)b);
            }
            else
            {
                sb.Append('%');
                sb.Append(HexDigit(b >> 4));
                sb.Append(HexDigit(b & 0xF));
            }
        }
        return sb.ToString();
    }

    /// <summary>
    /// Decodes a received <c>grpc-message</c>. As the spec asks, decoding never fails: a
    /// <c>%</c> not followed by two hex digits is kept literally, and bytes that are not valid
    /// UTF-8 become U+FFFD.
    /// </summary>
    public static string Decode(string value)
    {
        if (value.IndexOf('%') < 0)
            return value;
        var bytes = new byte[value.Length];
        int n = 0;
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (c == '%' && i + 2 < value.Length
                && TryHex(value[i + 1], out int hi) && TryHex(value[i + 2], out int lo))
            {
                bytes[n++] = (byte)((hi << 4) | lo);
                i += 2;
            }
            else if (c <= 0x7F)
            {
                bytes[n++] = (byte)c;
            }
            else
            {
                // Header values are ASCII on the wire; anything else can only come from a
                // lenient stack. Keep it readable rather than dropping it.
                return value;
            }
        }
        return new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false).GetString(bytes, 0, n);
    }

    private static bool IsUnreserved(char c) => c >= 0x20 && c <= 0x7E && c != '%';

    private static char HexDigit(int v) => (char)(v < 10 ? '0' + v : 'A' + v - 10);

    private static bool TryHex(char c, out int v)
    {
        v = c switch
        {
            >= '0' and <= '9' => c - '0',
            >= 'a' and <= 'f' => c - 'a' + 10,
            >= 'A' and <= 'F' => c - 'A' + 10,
            _ => -1,
        };
        return v >= 0;
    }
}
