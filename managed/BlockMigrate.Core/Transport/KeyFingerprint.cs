using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace BlockMigrate.Transport;

/// <summary>"SHA256:" + unpadded base64 of the SHA-256 of the SubjectPublicKeyInfo, as ssh-keygen -l prints.</summary>
public static class KeyFingerprint
{
    public static string Of(X509Certificate cert)
    {
        using var c = new X509Certificate2(cert);
        var spki = c.PublicKey.ExportSubjectPublicKeyInfo();
        return "SHA256:" + Convert.ToBase64String(SHA256.HashData(spki)).TrimEnd('=');
    }

    /// <summary>Accepts "SHA256:xxx" or bare "xxx"; returns the canonical form, or null when malformed.</summary>
    public static string? Normalize(string text)
    {
        var t = text.Trim();
        if (t.StartsWith("SHA256:", StringComparison.OrdinalIgnoreCase)) t = t[7..];
        t = t.TrimEnd('=');
        if (t.Length != 43) return null;
        try
        {
            Convert.FromBase64String(t + "=");
        }
        catch (FormatException)
        {
            return null;
        }
        return "SHA256:" + t;
    }
}
