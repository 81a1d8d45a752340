using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using BlockMigrate.Files;

namespace BlockMigrate.Transport;

/// <summary>
/// A host's identity: an ECDSA P-256 key and a self-signed certificate in one PEM file (mode 0600).
/// Peers pin its <see cref="Fingerprint"/> (SHA-256 of the public key), as SSH pins host keys:
/// the certificate's names and dates are not checked, only the key.
/// </summary>
public sealed class NodeKey : IDisposable
{
    private NodeKey(X509Certificate2 certificate)
    {
        Certificate = certificate;
        Fingerprint = KeyFingerprint.Of(certificate);
    }

    public X509Certificate2 Certificate { get; }
    public string Fingerprint { get; }

    /// <summary>Makes a new key and certificate, writes them to <paramref name="path"/> and returns the key.</summary>
    public static NodeKey Generate(string path, string subject)
    {
        using var ecdsa = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest(new X500DistinguishedName("CN=" + subject), ecdsa, HashAlgorithmName.SHA256);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddYears(100));
        var pem = ecdsa.ExportPkcs8PrivateKeyPem() + "\n" + cert.ExportCertificatePem() + "\n";
        if (File.Exists(path)) throw new TransportException($"key file {path} already exists; remove it first to make a new key");
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var f = new FileStream(path, options))
        using (var w = new StreamWriter(f))
            w.Write(pem);
        return Load(path);
    }

    /// <summary>
    /// Loads a key made by <see cref="Generate"/>. Refused, as ssh refuses such a key, when it is not a regular
    /// file owned by this user or root with mode 0600 (or stricter).
    /// </summary>
    public static NodeKey Load(string path)
    {
        if (!File.Exists(path)) throw new TransportException($"cannot read key file {path}: it does not exist (make one with 'blockmigrate keygen --out {path}')");
        if (StrictModes.KeyProblem(path) is { } problem) throw new TransportException(problem);
        string pem;
        try
        {
            pem = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TransportException($"cannot read key file {path}: {e.Message}");
        }
        try
        {
            using var ephemeral = X509Certificate2.CreateFromPem(pem, pem);
            // SslStream on Linux wants a key it can hand to OpenSSL: round-trip through PKCS#12
            return new NodeKey(X509CertificateLoader.LoadPkcs12(ephemeral.Export(X509ContentType.Pkcs12), null));
        }
        catch (CryptographicException e)
        {
            throw new TransportException($"key file {path} is not a BlockMigrate key (PEM private key + certificate): {e.Message}");
        }
    }

    public void Dispose() => Certificate.Dispose();
}
