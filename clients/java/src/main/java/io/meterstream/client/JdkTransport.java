package io.meterstream.client;

import java.io.IOException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/** The default {@link Transport}: java.net.http, optionally trusting a private CA. */
public final class JdkTransport implements Transport {
  private final HttpClient http;

  public JdkTransport(HttpClient http) {
    this.http = http;
  }

  /** A transport trusting the system's CAs, or only the PEM certificates given. */
  public static JdkTransport create(byte[] caCertificatesPem) {
    HttpClient.Builder builder = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1);
    if (caCertificatesPem != null) {
      builder.sslContext(sslContext(caCertificatesPem));
    }
    return new JdkTransport(builder.build());
  }

  static SSLContext sslContext(byte[] pem) {
    try {
      KeyStore store = KeyStore.getInstance(KeyStore.getDefaultType());
      store.load(null, null);
      int n = 0;
      for (Certificate cert :
          CertificateFactory.getInstance("X.509")
              .generateCertificates(new java.io.ByteArrayInputStream(pem))) {
        store.setCertificateEntry("ca-" + n++, cert);
      }
      if (n == 0) {
        throw new IllegalArgumentException("the CA file holds no PEM certificate");
      }
      TrustManagerFactory trust =
          TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
      trust.init(store);
      SSLContext context = SSLContext.getInstance("TLS");
      context.init(null, trust.getTrustManagers(), null);
      return context;
    } catch (GeneralSecurityException | IOException e) {
      throw new IllegalArgumentException("cannot read the CA certificates: " + e.getMessage(), e);
    }
  }

  @Override
  public Answer send(Call call) throws IOException, InterruptedException {
    HttpRequest.Builder request = HttpRequest.newBuilder(call.uri());
    call.headers().forEach(request::header);
    if (call.timeout() != null) {
      request.timeout(call.timeout());
    }
    Body body = call.body();
    HttpRequest.BodyPublisher publisher;
    if (body == null) {
      publisher = HttpRequest.BodyPublishers.noBody();
    } else if (body instanceof Transport.Bytes bytes) {
      publisher = HttpRequest.BodyPublishers.ofByteArray(bytes.bytes());
    } else {
      publisher =
          HttpRequest.BodyPublishers.fromPublisher(
              HttpRequest.BodyPublishers.ofInputStream(
                  () -> {
                    try {
                      return body.open();
                    } catch (IOException e) {
                      throw new java.io.UncheckedIOException(e);
                    }
                  }),
              body.length());
      if (body.length() == 0) {
        publisher = HttpRequest.BodyPublishers.noBody();
      }
    }
    request.method(call.method(), publisher);
    HttpResponse<byte[]> response =
        http.send(request.build(), HttpResponse.BodyHandlers.ofByteArray());
    Map<String, String> headers = new HashMap<>();
    response
        .headers()
        .map()
        .forEach((name, values) -> headers.put(name.toLowerCase(Locale.ROOT), String.join(", ", values)));
    return new Answer(response.statusCode(), headers, response.body());
  }
}
