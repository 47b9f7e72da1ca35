using System.Threading.Tasks.Sources;

namespace Pooler.Actors.Tls;

/// <summary>
/// The Stream an SslStream runs over, fed by a TlsConnection actor: ciphertext the socket actor delivered is
/// <see cref="Push"/>ed in, ciphertext SslStream writes goes to <c>send</c> (a Tcp.Write to the socket actor).
/// A pending read completes inline in the pusher's thread, so a chunk is decrypted and handed on within the
/// actor's own message, with no extra hop. Zero-byte reads wait for data without holding a buffer (SslStream
/// uses them to wait with its own buffer returned to the pool).
/// </summary>
internal sealed class BridgeStream(Action<byte[]> send) : Stream, IValueTaskSource<int>
{
    private readonly object _gate = new();
    private ReadOnlyMemory<byte> _head; // the chunk being read
    private readonly Queue<ReadOnlyMemory<byte>> _queue = new(); // chunks after it
    private bool _eof;
    private bool _pending;
    private Memory<byte> _pendingBuffer;
    private ManualResetValueTaskSourceCore<int> _source; // continuations run inline: see the summary
    private readonly List<byte[]> _collectedParts = [];
    private bool _collecting;

    /// <summary>Ciphertext from the socket.</summary>
    public void Push(ReadOnlyMemory<byte> data)
    {
        if (data.IsEmpty) return;
        int n;
        lock (_gate)
        {
            if (!_pending) { Enqueue(data); return; }
            _pending = false;
            n = Math.Min(data.Length, _pendingBuffer.Length);
            data[..n].CopyTo(_pendingBuffer);
            if (n < data.Length) Enqueue(data[n..]);
            _pendingBuffer = default;
        }
        _source.SetResult(n);
    }

    /// <summary>The socket closed: reads end once the queued bytes are consumed.</summary>
    public void PushEof()
    {
        lock (_gate)
        {
            _eof = true;
            if (!_pending) return;
            _pending = false;
            _pendingBuffer = default;
        }
        _source.SetResult(0);
    }

    /// <summary>Writes made until <see cref="EndCollect"/> are gathered into one, instead of one socket write each.</summary>
    public void BeginCollect()
    {
        lock (_gate) _collecting = true;
    }

    /// <summary>Ends collecting and returns what was written meanwhile as one ByteString (most often one TLS record).</summary>
    public Akka.IO.ByteString EndCollect()
    {
        lock (_gate)
        {
            _collecting = false;
            var data = _collectedParts.Count switch
            {
                0 => Akka.IO.ByteString.Empty,
                1 => Akka.IO.ByteString.FromBytes(_collectedParts[0]),
                _ => _collectedParts.Aggregate(Akka.IO.ByteString.Empty, (acc, p) => acc.Concat(Akka.IO.ByteString.FromBytes(p))),
            };
            _collectedParts.Clear();
            return data;
        }
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (!_head.IsEmpty)
            {
                if (buffer.IsEmpty) return new ValueTask<int>(0);
                var total = 0;
                while (!_head.IsEmpty && total < buffer.Length)
                {
                    var n = Math.Min(_head.Length, buffer.Length - total);
                    _head[..n].CopyTo(buffer[total..]);
                    total += n;
                    _head = _head[n..];
                    if (_head.IsEmpty && _queue.Count > 0) _head = _queue.Dequeue();
                }
                return new ValueTask<int>(total);
            }
            if (_eof) return new ValueTask<int>(0);
            if (_pending) throw new InvalidOperationException("a read is already pending");
            _source.Reset();
            _pending = true;
            _pendingBuffer = buffer;
            return new ValueTask<int>(this, _source.Version);
        }
    }

    private void Enqueue(ReadOnlyMemory<byte> data)
    {
        if (_head.IsEmpty) _head = data;
        else _queue.Enqueue(data);
    }

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (buffer.IsEmpty) return;
        var copy = buffer.ToArray();
        lock (_gate)
        {
            if (_collecting) { _collectedParts.Add(copy); return; }
        }
        send(copy);
    }

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span);
        return default;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
    {
        Write(buffer.AsSpan(offset, count));
        return Task.CompletedTask;
    }

    public override int Read(byte[] buffer, int offset, int count)
        => throw new NotSupportedException("the TLS bridge is read asynchronously only");

    public override void Flush() { }
    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    int IValueTaskSource<int>.GetResult(short token) => _source.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource<int>.GetStatus(short token) => _source.GetStatus(token);
    void IValueTaskSource<int>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
        => _source.OnCompleted(continuation, state, token, flags);
}
