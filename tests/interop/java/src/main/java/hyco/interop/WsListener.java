package hyco.interop;

import com.microsoft.azure.relay.HybridConnectionChannel;
import com.microsoft.azure.relay.HybridConnectionListener;
import com.microsoft.azure.relay.TokenProvider;
import com.microsoft.azure.relay.WebSocketChannel;
import java.net.URI;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import org.json.JSONObject;

/**
 * Echo listener on the official Java SDK.
 *
 * <pre>java hyco.interop.WsListener sb://HOST:PORT/PATH KEY_NAME KEY [reject STATUS DESCRIPTION]</pre>
 *
 * Every text message comes back as text, every binary message as binary; the text {@code __close__} closes the
 * connection. With {@code reject}, the accept handler turns every sender away with that status and description.
 * Events on stdout: listening, offline, connection, connection_close, error, closed.
 */
public final class WsListener {
    private WsListener() {}

    public static void main(String[] args) throws Exception {
        if (args.length != 3 && args.length != 6) {
            Events.usage("WsListener sb://HOST:PORT/PATH KEY_NAME KEY [reject STATUS DESCRIPTION]");
        }
        TokenProvider tokens = TokenProvider.createSharedAccessSignatureTokenProvider(args[1], args[2]);
        HybridConnectionListener listener = new HybridConnectionListener(new URI(args[0]), tokens);
        // The SDK refuses messages over 64 KiB (close 1009) unless told otherwise; the tests send 1 MiB.
        listener.setMaxWebSocketBufferSize(4 * 1024 * 1024);
        if (args.length == 6) {
            int status = Integer.parseInt(args[4]);
            String description = args[5];
            listener.setAcceptHandler(context -> {
                context.getResponse().setStatusCode(status);
                context.getResponse().setStatusDescription(description);
                return false;
            });
        }
        listener.setOfflineHandler(err -> Events.emit(new JSONObject().put("event", "offline")
                .put("message", String.valueOf(err))));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            listener.closeAsync().join();
            Events.emit("closed");
        }));
        try {
            listener.openAsync(Duration.ofSeconds(30)).join();
        } catch (RuntimeException err) {
            Events.error(err);
            System.exit(1);
        }
        Events.emit("listening");
        while (true) {
            HybridConnectionChannel channel = listener.acceptConnectionAsync().join();
            if (channel == null) {
                return; // the listener closed
            }
            Events.emit(new JSONObject().put("event", "connection")
                    .put("id", channel.getTrackingContext().getTrackingId()));
            echo((WebSocketChannel) channel);
        }
    }

    /** The SDK reads text and binary from two queues: one echo loop for each, done when both end. */
    private static void echo(WebSocketChannel channel) {
        CompletableFuture<Void> text = CompletableFuture.runAsync(() -> {
            String message;
            while ((message = channel.readTextAsync().join()) != null) {
                if (message.equals("__close__")) {
                    channel.closeAsync().join();
                    return;
                }
                channel.writeTextAsync(message, null).join();
            }
        });
        CompletableFuture<Void> binary = CompletableFuture.runAsync(() -> {
            ByteBuffer message;
            while ((message = channel.readAsync().join()) != null) {
                channel.writeAsync(message).join();
            }
        });
        CompletableFuture.allOf(text, binary).whenComplete((ok, err) -> {
            if (err != null) {
                Events.error(err);
            }
            Events.emit("connection_close");
        });
    }
}
