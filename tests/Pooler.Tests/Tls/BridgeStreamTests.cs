using System.Net.Security;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Pooler.Actors.Tls;
using Xunit;

namespace Pooler.Tests.Tls;

/// <summary>
/// The stream SslStream runs over inside TlsConnection: reads wait for pushed bytes, zero-byte reads wait
/// without taking any, EOF ends reads after the queued bytes, collected writes come out as one.
/// Two real SslStreams over two bridges wired to each other show the whole TLS path without sockets.
/// </summary>
public sealed class BridgeStreamTests
{
    [Fact]
    public async Task A_pending_read_completes_inline_when_bytes_are_pushed()
    {
        var bridge = new BridgeStream(_ => { });
        var buffer = new byte[4];
        var read = bridge.ReadAsync(buffer);
        Assert.False(read.IsCompleted);
        bridge.Push(new byte[] { 1, 2, 3, 4, 5, 6 });
        Assert.True(read.IsCompleted); // no hop to another thread: the pusher's thread ran the continuation
        Assert.Equal(4, await read);
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, buffer);
        // the rest stays queued for the next read
        Assert.Equal(2, await bridge.ReadAsync(buffer));
        Assert.Equal(new byte[] { 5, 6 }, buffer[..2]);
    }

    [Fact]
    public async Task A_zero_byte_read_waits_for_data_and_takes_none()
    {
        var bridge = new BridgeStream(_ => { });
        var wait = bridge.ReadAsync(Memory<byte>.Empty);
        Assert.False(wait.IsCompleted);
        bridge.Push(new byte[] { 7, 8 });
        Assert.Equal(0, await wait);
        var buffer = new byte[8];
        Assert.Equal(2, await bridge.ReadAsync(buffer));
        Assert.Equal(new byte[] { 7, 8 }, buffer[..2]);
    }

    [Fact]
    public async Task Eof_ends_reads_after_the_queued_bytes()
    {
        var bridge = new BridgeStream(_ => { });
        bridge.Push(new byte[] { 1 });
        bridge.PushEof();
        var buffer = new byte[8];
        Assert.Equal(1, await bridge.ReadAsync(buffer));
        Assert.Equal(0, await bridge.ReadAsync(buffer));
        var pending = new BridgeStream(_ => { });
        var read = pending.ReadAsync(buffer);
        pending.PushEof();
        Assert.Equal(0, await read);
    }

    [Fact]
    public void Writes_go_out_one_by_one_unless_collected()
    {
        var sent = new List<byte[]>();
        var bridge = new BridgeStream(sent.Add);
        bridge.Write(new byte[] { 1 });
        Assert.Single(sent);
        bridge.BeginCollect();
        bridge.Write(new byte[] { 2 });
        bridge.Write(new byte[] { 3, 4 });
        Assert.Single(sent);
        Assert.Equal(new byte[] { 2, 3, 4 }, bridge.EndCollect().ToArray());
        Assert.Equal(0, bridge.EndCollect().Count);
        bridge.Write(new byte[] { 5 });
        Assert.Equal(2, sent.Count);
    }

    [Fact]
    public async Task Two_SslStreams_over_wired_bridges_handshake_and_carry_data_both_ways()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var cert = new CertificateRequest("CN=localhost", key, HashAlgorithmName.SHA256)
            .CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
        BridgeStream? serverSide = null, clientSide = null;
        // what one side writes is what the other side's socket delivers
        serverSide = new BridgeStream(bytes => clientSide!.Push(bytes));
        clientSide = new BridgeStream(bytes => serverSide.Push(bytes));
        using var server = new SslStream(serverSide);
        using var client = new SslStream(clientSide);
        var accept = server.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = cert });
        var connect = client.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            RemoteCertificateValidationCallback = (_, c, _, _) => c?.GetCertHashString() == cert.GetCertHashString(),
        });
        await Task.WhenAll(accept, connect).WaitAsync(TimeSpan.FromSeconds(10));

        var payload = RandomNumberGenerator.GetBytes(100_000); // several TLS records
        var received = new MemoryStream();
        var reading = Task.Run(async () =>
        {
            var buf = new byte[8192];
            while (received.Length < payload.Length)
            {
                var n = await server.ReadAsync(buf);
                if (n == 0) break;
                received.Write(buf, 0, n);
            }
        });
        client.Write(payload); // synchronous: the bridge only hands bytes on
        await reading.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(payload, received.ToArray());

        server.Write("pong"u8);
        var back = new byte[16];
        Assert.Equal(4, await client.ReadAsync(back).AsTask().WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal("pong"u8.ToArray(), back[..4]);
    }
}
